"""Reused memory (lstm_np._workspace): nothing a caller holds is ever overwritten, and the pool
does not grow from one training step to the next."""
import threading

import numpy as np
import pytest

import lstm_np
from lstm_np import _workspace
from helpers import make_layer


@pytest.fixture
def pool_everything(monkeypatch):
    """Pool arrays of any size, so that small (fast, also in plain Python) layers use it."""
    monkeypatch.setattr(_workspace, "MIN_BYTES", 0)


def test_a_buffer_is_handed_out_again_only_when_nothing_uses_it():
    a = _workspace.empty((64, 300), np.float32)
    b = _workspace.empty((64, 300), np.float32)
    assert not np.shares_memory(a, b)
    view = a[10:20, ::3]                      # a view keeps the buffer busy
    del a
    c = _workspace.empty((64, 300), np.float32)
    assert not np.shares_memory(view, c) and not np.shares_memory(b, c)
    address = view.base.ctypes.data if view.base is not None else None
    del view, c
    d = _workspace.empty((300, 64), np.float32)   # same size, another shape
    assert d.shape == (300, 64) and d.flags.c_contiguous
    assert address is not None and d.base.ctypes.data in {
        buf.ctypes.data for buf, _ in _workspace._pool[64 * 300 * 4]}


def test_small_arrays_are_not_pooled():
    before = dict(_workspace._pool)
    small = _workspace.empty((10, 10), np.float64)
    assert small.base is None and _workspace._pool.keys() == before.keys()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_held_outputs_tapes_and_gradients_are_never_overwritten(cell, pool_everything):
    rng = np.random.default_rng(0)
    layer = make_layer(cell, 3, 5, dtype=np.float32, num_layers=2)
    x1 = rng.standard_normal((7, 4, 3)).astype(np.float32)
    y_inf, _ = layer(x1)
    y1, _, tape1 = layer.forward(x1)
    g1 = layer.backward(tape1, np.ones_like(y1))
    kept = [y_inf.copy(), y1.copy(), g1.dx.copy(), g1.dh.copy(),
            {k: v.copy() for k, v in tape1.steps[0].items()}]
    for _ in range(3):                        # more calls of the same shapes, other values
        x2 = rng.standard_normal(x1.shape).astype(np.float32)
        y2, _, tape2 = layer.forward(x2)
        layer.backward(tape2, rng.standard_normal(y2.shape).astype(np.float32))
        layer(x2)
    assert np.array_equal(y_inf, kept[0]) and np.array_equal(y1, kept[1])
    assert np.array_equal(g1.dx, kept[2]) and np.array_equal(g1.dh, kept[3])
    for name, value in tape1.steps[0].items():
        assert np.array_equal(value, kept[4][name]), name
    again = layer.backward(tape1, np.ones_like(y1))   # the kept tape still gives its gradients
    assert np.array_equal(again.dx, kept[2])


def test_the_pool_stops_growing_once_a_training_step_has_run(pool_everything):
    layer = lstm_np.LSTM(3, 5, dtype=np.float32, seed=0, num_layers=2)
    x = np.ones((7, 4, 3), np.float32)

    def step():
        y, _, tape = layer.forward(x)
        layer.backward(tape, np.ones_like(y))
    step()
    step()
    size = _workspace._pooled_bytes
    for _ in range(5):
        step()
    assert _workspace._pooled_bytes == size


def test_threads_sharing_the_pool_get_their_own_memory(pool_everything):
    layers = [lstm_np.GRU(3, 5, dtype=np.float64, seed=s) for s in range(4)]
    xs = [np.random.default_rng(s).standard_normal((6, 4, 3)) for s in range(4)]
    expected = [layer(x)[0].copy() for layer, x in zip(layers, xs)]
    results = [[] for _ in layers]

    def work(k):
        for _ in range(10):
            results[k].append(layers[k](xs[k])[0])
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, runs in enumerate(results):
        assert all(np.array_equal(y, expected[k]) for y in runs)


def test_a_full_pool_makes_room_by_dropping_unused_buffers(monkeypatch):
    lstm_np.release_memory()                                    # no free buffer of these sizes
    monkeypatch.setattr(_workspace, "MAX_POOLED_BYTES",
                        _workspace._pooled_bytes + 3 * (2 ** 17 + _workspace.ALIGN_SLACK))
    held = _workspace.empty((2 ** 15,), np.float32)             # 128 KiB, pooled, in use
    unused = _workspace.empty((2 ** 15 + 16,), np.float32)      # pooled, then dropped by us
    del unused
    big = _workspace.empty((2 ** 16,), np.float32)              # 256 KiB: needs the room
    assert any(buf.ctypes.data == big.base.ctypes.data
               for buf, _ in _workspace._pool.get(2 ** 18, []))
    assert (2 ** 15 + 16) * 4 not in _workspace._pool           # the unused one went
    assert held.base is not None and any(buf is held.base for buf, _ in _workspace._pool[2 ** 17])


def test_release_memory_drops_only_unused_buffers(pool_everything):
    layer = lstm_np.GRU(3, 5, dtype=np.float64, seed=0)
    x = np.ones((6, 4, 3))
    y_kept, _ = layer(x)
    expected = y_kept.copy()
    layer(2 * x)                               # its buffers are free once it returns
    dropped = lstm_np.release_memory()
    assert dropped > 0
    assert all(buf is y_kept.base for entries in _workspace._pool.values()
               for buf, _ in entries)
    assert np.array_equal(y_kept, expected)
    assert lstm_np.release_memory() == 0       # nothing more to give back


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_copy_sits_at_its_sources_offset_modulo_4096(dtype):
    """A copy whose destination is a few bytes past its source modulo 4096 runs into 4K
    aliasing (10x slower here); :func:`_workspace.copy` places the copy at the source's offset."""
    item = np.dtype(dtype).itemsize
    raw = np.empty(2 ** 17 + 8192, np.uint8)
    for shift in (0, item, 2 * item, 3 * item, 40, 4096 - item):
        source = raw[shift:shift + 2 ** 17].view(dtype).reshape(64, -1)
        source[...] = np.arange(source.size).reshape(source.shape)
        out = _workspace.copy(source)
        assert out.flags.c_contiguous and out.dtype == dtype and np.array_equal(out, source)
        assert not np.shares_memory(out, source)
        assert (out.ctypes.data - source.ctypes.data) % 4096 == 0, shift
        del out


def test_a_copy_of_a_misaligned_or_strided_source_is_still_a_copy():
    raw = np.empty(2 ** 17 + 64, np.uint8)
    odd = raw[3:3 + 2 ** 17].view(np.float64)            # not aligned for float64
    odd[...] = np.arange(odd.size)
    out = _workspace.copy(odd)
    assert out.ctypes.data % 8 == 0 and np.array_equal(out, odd)
    strided = np.arange(2 ** 16, dtype=np.float32).reshape(256, 256)[:, ::2]
    out = _workspace.copy(strided)
    assert out.flags.c_contiguous and np.array_equal(out, strided)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_empty_starts_a_cache_line(dtype):
    """Every shape, also one whose bytes are not a multiple of the line; the array is C-contiguous,
    writable and its own (the streams' flat buffers are made so)."""
    for shape in [(1,), (7,), (3, 5), (2, 3, 4), (1000,)]:
        arrays = [_workspace.aligned_empty(shape, dtype) for _ in range(8)]
        for a in arrays:
            assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
            assert a.flags.writeable and a.ctypes.data % _workspace.LINE == 0
            a[...] = 1.0
        for a, b in zip(arrays, arrays[1:]):
            assert not np.shares_memory(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooled_arrays_start_a_cache_line(dtype):
    """Placed by nothing else, a pooled array starts a cache line (NumPy's large arrays start
    16 bytes past one), fresh or handed out again; a copy keeps its source's offset instead
    where that is aligned for the dtype, and falls back to a line where it is not."""
    item = np.dtype(dtype).itemsize
    for shape in [(64, 300), (3, 100, 77), (2 ** 14 + 1,)] * 2:
        arrays = [_workspace.empty(shape, dtype) for _ in range(3)]
        for a in arrays:
            assert a.shape == shape and a.flags.c_contiguous
            assert a.ctypes.data % _workspace.LINE == 0
            assert any(a.base is buf for entries in _workspace._pool.values()
                       for buf, _ in entries)
        del arrays
    # each buffer's address is kept beside it, and is its address
    assert all(address == buf.ctypes.data for entries in _workspace._pool.values()
               for buf, address in entries)
    raw = np.empty(2 ** 17 + 8192, np.uint8)
    source = raw[16:16 + 2 ** 17].view(dtype)
    assert (_workspace.copy(source).ctypes.data - source.ctypes.data) % 4096 == 0
    odd = raw[3:3 + 2 ** 17].view(dtype)                  # not aligned for the dtype
    placed = _workspace.empty(odd.shape, dtype, offset_like=odd)
    assert placed.ctypes.data % _workspace.LINE == 0 and placed.ctypes.data % item == 0


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_time_loops_arrays_start_a_cache_line(pool_everything, cell):
    """What the time loops' vector loops stream through starts a cache line: the outputs (``y =
    h_seq[1:]``, one step of ``B P`` elements past the state sequence's start: a whole number of
    lines here), in inference and in training, and every per-step record of the tape."""
    layer = make_layer(cell, 5, 16, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((6, 4, 5)).astype(np.float32)
    y, _ = layer(x)
    assert y.ctypes.data % _workspace.LINE == 0
    y, _, tape = layer.forward(x)
    records = [a for step in tape.steps for a in step.values() if isinstance(a, np.ndarray)]
    assert y.ctypes.data % _workspace.LINE == 0 and records
    for a in records:
        assert a.ctypes.data % _workspace.LINE == 0


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_streams_buffer_starts_a_cache_line(cell):
    stream = make_layer(cell, 5, 8, dtype=np.float32).stream(batch_size=2)
    assert stream._buffer.ctypes.data % _workspace.LINE == 0


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_call_without_a_state_starts_from_zeros_in_reused_memory(pool_everything, monkeypatch,
                                                                   cell, threads):
    """A call given no state starts from zeros, which its time loops write (``zero_init``)
    into the pooled state sequences: those held the last call's states, and nothing of them
    may leak in (inference and training, both directions, blocks of rows in threads)."""
    import os
    from lstm_np import _threads
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(_threads, "MIN_STEP_BYTES_PER_BLOCK", 0)   # small layers in blocks too
    rng = np.random.default_rng(3)
    layer = make_layer(cell, 3, 5, bidirectional=True)
    x = rng.standard_normal((7, 8, 3))
    sizes = layer.state_sizes()
    zeros = tuple(np.zeros((2, 8, n)) for n in sizes)
    busy = tuple(rng.standard_normal((2, 8, n)) + 3.0 for n in sizes)
    zeros, busy = (zeros, busy) if len(sizes) > 1 else (zeros[0], busy[0])
    lstm_np.set_num_threads(threads)
    try:
        expected = layer(x, zeros)[0].copy()
        expected_training = layer.forward(x, zeros)[0].copy()
        for _ in range(2):
            layer(x, busy)                    # the pooled buffers' initial rows: not zeros
            assert np.array_equal(layer(x)[0], expected)
            layer.forward(x, busy)
            assert np.array_equal(layer.forward(x)[0], expected_training)
    finally:
        lstm_np.set_num_threads(1)
