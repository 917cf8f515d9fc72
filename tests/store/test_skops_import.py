"""skops lists scikit-learn's estimators at import by walking every sklearn package, which
imports PyTorch (seconds) through sklearn's array-API shim when PyTorch is installed. The
stand-in that skips it must leave nothing behind: the real shim still imports afterwards."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
from conveyor.store.trusted import skops_io
sio = skops_io()
assert sio is sys.modules["skops.io"] and hasattr(sio, "loads")
assert "torch" not in sys.modules, "skops' import pulled in PyTorch"
assert "sklearn.externals.array_api_compat.torch" not in sys.modules, "the stand-in stayed"
import sklearn.externals.array_api_compat.torch as shim
assert "torch" in sys.modules and hasattr(shim, "asarray"), "the real shim no longer imports"
"""


def test_skops_imports_without_pytorch_and_the_real_array_api_shim_still_imports() -> None:
    pytest.importorskip("torch")  # installed by make setup; without it there is nothing to skip
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
