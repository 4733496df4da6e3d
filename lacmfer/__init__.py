"""LA-CMFER: cross-multidomain facial expression recognition (usable without Ray)."""

__version__ = "0.1.0"
