"""Numba's reference counting stays balanced around the kernels.

The helpers that the time loops call per row and per tile are compiled without reference
counting (``kernels._jit.jit_borrowing``): views they make are not counted, and such a function
must never hand an array to a counted caller. If one did, the caller would release a count that
was never taken (an array freed while in use) or, the other way round, a count would never be
released (the memory kept forever). Numba's own allocation statistics count both: every
allocation and every meminfo (the owner of an array's memory and its count) that the kernels
make must be freed again when a call returns, for every cell, on both kinds of time loop (the
register tiles and the BLAS), with variable lengths, two layers, both directions, a projection,
and in the streaming steps."""
import sys

import numba
import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

from helpers import CELLS, make_layer

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="counts what Numba's compiled "
                                "code allocates; as plain Python there is none")


@pytest.fixture
def allocation_stats():
    """Numba's allocation statistics switched on for the test (off again after it)."""
    was_on = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    yield rtsys.get_allocation_stats
    if not was_on:
        _nrt_python.memsys_disable_stats()


def _exercise(layer, x, lengths, stream):
    y, _ = layer(x, lengths=lengths)
    y2, _, tape = layer.forward(x, lengths=lengths)
    layer.backward(tape, np.ones_like(y2))
    if stream is not None:
        for x_t in x[:3]:
            stream.step(x_t)


@pytest.mark.parametrize("kernel", ["loop", "blas"])
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_release_every_count_they_take(allocation_stats, cell, kernel):
    options = dict(num_layers=2, bidirectional=True)
    if cell == "lstm":
        options["proj_size"] = 5
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 6, 4)).astype(np.float32)
    lengths = [7, 3, 7, 1, 5, 6]
    for layer, lens, stream in (
            (make_layer(cell, 4, 9, np.float32, **options), lengths, None),
            (make_layer(cell, 4, 9, np.float32, num_layers=2), None, None)):
        layer.kernel = kernel
        stream = layer.stream(batch_size=6) if not layer.bidirectional else None
        _exercise(layer, x, lens, stream)              # compiled, and the pools filled
        before = allocation_stats()
        counts = [sys.getrefcount(a) for a in (x, *layer.params.values())]
        for _ in range(3):
            _exercise(layer, x, lens, stream)
        after = allocation_stats()
        made = after.alloc - before.alloc
        assert made > 0                                # the kernels did allocate (and count)
        assert after.free - before.free == made
        assert after.mi_alloc - before.mi_alloc == after.mi_free - before.mi_free
        assert counts == [sys.getrefcount(a) for a in (x, *layer.params.values())]
