"""edge-resnet: from a ResNet classifier to an INT8 engine on an NVIDIA Jetson."""

__version__ = "0.1.0"
