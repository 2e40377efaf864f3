"""pegasus's version: one owner, imported by everything that records it (checkpoints, exports,
plugins' records) without importing the package's public front door."""

__version__ = "0.1.0"
