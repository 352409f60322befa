"""scratchsat: train CNNs from scratch on multi-band satellite imagery."""

__version__ = "0.1.0"
