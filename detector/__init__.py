"""detector: MobileNet-SSD object detection (train, evaluate, export, run)."""

__version__ = "0.1.0"
