"""ocrnet-edge: one shared-feature vision model from a workstation to cameras on small boards.

Installed packages: ``ocrnet_edge.runtime`` (the device side, from ``runtime/``) and
``ocrnet_edge.model`` (training and evaluation, workstation side, from ``model/``).
"""

import os
import platform

__version__ = "0.1.0"

# TensorFlow's default CPU allocator hands every large tensor back to the OS when it is freed, so each training
# step maps and page-faults its activations afresh: on a 2-core machine, a Penn-Fudan step of batch 16 at 320 spent
# 44% of its CPU time in the kernel. TensorFlow's BFC allocator keeps the freed memory for the next step (same
# results, 12 to 23% more resident memory). Read at TensorFlow's first allocation, so it is set here, before any;
# the device side (LiteRT) ignores it. TF_CPU_ALLOCATOR_USE_BFC=false in the environment turns it off.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

# TensorFlow's x86 build runs its oneDNN kernels only where it turns them on by itself, on CPUs with the newer vector
# extensions; on an AVX2 CPU (the 2-core EPYC here: tensorflow's IsMklEnabled() is False) it runs Eigen's, and a
# training step of the photo default took 1.47 times as long (docs/recipe_runs.md, "TensorFlow's oneDNN kernels on
# AVX2 CPUs"). Read when TensorFlow loads, so it is set here, before; TensorFlow then prints that oneDNN is on, as it
# does where it turns it on itself. TF_ENABLE_ONEDNN_OPTS=0 in the environment turns it off.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
