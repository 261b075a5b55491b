"""Physics-of-degradation models; each names its formula and source."""
