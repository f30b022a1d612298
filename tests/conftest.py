"""Shared test set-up.

Layer tests run with both time-loop implementations, the whole-loop Numba kernel and its
BLAS-stepped twin (``Recurrent.kernel``); they must give the same answers. A module opts in with
``pytestmark = pytest.mark.usefixtures("kernel_path")``.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py, naive.py, torch_reference.py


@pytest.fixture(params=["loop", "blas"])
def kernel_path(request, monkeypatch):
    import lstm_np
    monkeypatch.setattr(lstm_np.Recurrent, "kernel", request.param)
    return request.param
