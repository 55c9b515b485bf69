"""mountfs: a cloud drive that you mount."""

__version__ = "0.1.0"
