"""portraitseg: Helen face parsing with Lightning + Hydra, and DSLR-style portraits on tensors."""

__version__ = "0.1.0"
