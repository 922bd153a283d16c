"""ocrnet-edge: one shared-feature vision model from a workstation to cameras on small boards.

Installed packages: ``ocrnet_edge.runtime`` (the device side, from ``runtime/``) and
``ocrnet_edge.model`` (training and evaluation, workstation side, from ``model/``).
"""

import os

__version__ = "0.1.0"

# TensorFlow's default CPU allocator hands every large tensor back to the OS when it is freed, so each training
# step maps and page-faults its activations afresh: on a 2-core machine, a Penn-Fudan step of batch 16 at 320 spent
# 44% of its CPU time in the kernel. TensorFlow's BFC allocator keeps the freed memory for the next step (same
# results, 12 to 23% more resident memory). Read at TensorFlow's first allocation, so it is set here, before any;
# the device side (LiteRT) ignores it. TF_CPU_ALLOCATOR_USE_BFC=false in the environment turns it off.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
