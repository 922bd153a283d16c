"""The device runtime never imports TensorFlow, Keras or the workstation side."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ocrnet_edge.runtime as runtime_pkg


def test_runtime_imports_with_tensorflow_and_keras_blocked():
    modules = sorted(m.name for m in pkgutil.walk_packages(runtime_pkg.__path__, "ocrnet_edge.runtime."))
    assert "ocrnet_edge.runtime.decode.detect" in modules
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras') or name.startswith('ocrnet_edge.model'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not heavy, heavy\n"
        "print('ok', len(sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok")
