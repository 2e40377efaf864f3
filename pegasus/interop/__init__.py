"""Other programs' files: the reference NCSNv2 code's checkpoints and configs (ncsnv2.py)."""
