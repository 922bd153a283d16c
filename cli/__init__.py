"""ocrnet-edge: one shared-feature vision model from a workstation to cameras on small boards.

Installed packages: ``ocrnet_edge.runtime`` (the device side, from ``runtime/``) and
``ocrnet_edge.model`` (training and evaluation, workstation side, from ``model/``).
"""

__version__ = "0.1.0"
