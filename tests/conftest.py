"""Shared test set-up.

Layer tests run with every time-loop implementation (``Recurrent.kernel``; see the
``kernel_path`` fixture); they must give the same answers. A module opts in with
``pytestmark = pytest.mark.usefixtures("kernel_path")``.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py, naive.py, torch_reference.py


@pytest.fixture(params=["loop", "blas", "blas-python"])
def kernel_path(request, monkeypatch):
    """``loop``: each step's products by the kernels' own loops; ``blas``: by NumPy's BLAS,
    called from the compiled loop; ``blas-python``: the Python-stepped twins, which run where
    the compiled loop cannot call NumPy's BLAS (``kernels._blas.FOUND`` is False)."""
    import lstm_np
    from lstm_np.kernels import _blas
    if request.param == "blas-python":
        monkeypatch.setattr(_blas, "FOUND", False)
    monkeypatch.setattr(lstm_np.Recurrent, "kernel", request.param.split("-")[0])
    return request.param
