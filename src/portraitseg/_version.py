"""The package version (read by checkpoints, exported weights and ``portraitseg --version``)."""

__version__ = "0.1.0"
