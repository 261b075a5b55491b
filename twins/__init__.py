"""Digital twins: degradation models, state estimation and RUL, and their Ray actors."""
