"""twinloop: shared roots of the harness, rigs, twins and ledger packages."""

__version__ = "0.1.0"
