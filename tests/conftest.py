"""Every layer test runs with both time-loop implementations: the whole-loop Numba kernel and
its BLAS-stepped twin (``Recurrent.kernel``); they must give the same answers."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py, naive.py, torch_reference.py


@pytest.fixture(autouse=True, params=["loop", "blas"])
def kernel_path(request, monkeypatch):
    import lstm_np
    monkeypatch.setattr(lstm_np.Recurrent, "kernel", request.param)
    return request.param
