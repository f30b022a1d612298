"""lstm_np's own threads (``lstm_np.set_num_threads``): blocks of a batch's rows run in parallel
and give the results of one thread; NumPy's BLAS setting is taken and given back; bad values are
refused without changing anything; an error in any block reaches the caller."""
import os

import numpy as np
import pytest

import lstm_np
from lstm_np import _threads
from lstm_np.kernels import _blas

from helpers import make_layer, state_parts


#: threads need the compiled loops to call NumPy's BLAS (true for NumPy's wheels, and in CI here)
needs_numpy_openblas = pytest.mark.skipif(not _blas.FOUND,
                                          reason="NumPy's BLAS is not the OpenBLAS of its wheels")


@pytest.fixture
def three_threads(monkeypatch):
    """Three lstm_np threads (three blocks of an odd batch), whatever the machine's core count:
    the blocks' results do not depend on how many cores run them."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    lstm_np.set_num_threads(3)
    yield
    lstm_np.set_num_threads(1)


def _run(layer, x, lengths, dy_seed=1):
    y, state, tape = layer.forward(x, lengths=lengths)
    rng = np.random.default_rng(dy_seed)
    dy = rng.standard_normal(y.shape).astype(layer.dtype)
    dstate = tuple(rng.standard_normal(s.shape).astype(layer.dtype) for s in state_parts(state))
    grads = layer.backward(tape, dy, dstate if isinstance(state, tuple) else dstate[0])
    inferred, _ = layer(x, lengths=lengths)
    return {"y": y, "inferred": inferred, "dx": grads.dx, **dict(zip(
        ["state_" + n for n in layer.state_names], state_parts(state))),
        **{"d" + k: v for k, v in grads.dparams.items()}}


CASES = [
    ("lstm", {}), ("lstm", {"bidirectional": True, "num_layers": 2}), ("lstm", {"proj_size": 5}),
    ("gru", {}), ("gru", {"reset_after": False, "bidirectional": True}),
    ("rnn", {"nonlinearity": "relu"}), ("rnn", {"num_layers": 2}),
]


@needs_numpy_openblas
@pytest.mark.parametrize("kernel", ["loop", "blas"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,options", CASES, ids=[f"{c}-{','.join(o) or 'default'}"
                                                     for c, o in CASES])
def test_blocks_give_the_results_of_one_thread(cell, options, dtype, kernel, monkeypatch):
    """Forward, inference, every gradient and the final state, with sequences of several
    lengths (some end inside the loop), 13 rows in 1 block and in 3 (4, 4 and 5 rows)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(_threads, "MIN_STEP_BYTES_PER_BLOCK", 0)   # small layers in blocks too
    layer = make_layer(cell, 6, 11, dtype=dtype, seed=3, **options)
    layer.kernel = kernel
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 13, 6)).astype(dtype)
    lengths = rng.integers(1, 10, 13)
    assert _threads.row_blocks(13) == [(0, 13)]
    one = _run(layer, x, lengths)
    lstm_np.set_num_threads(3)
    try:
        assert _threads.row_blocks(13) == [(0, 4), (4, 8), (8, 13)]
        three = _run(layer, x, lengths)
    finally:
        lstm_np.set_num_threads(1)
    # float32 BLAS kernels may order a row's sum by how many rows they get; the loops do not
    tol = 0 if dtype == np.float64 or kernel == "loop" else 1e-5
    for name in one:
        scale = np.abs(one[name]).max() + 1.0
        assert np.abs(one[name] - three[name]).max() <= tol * scale, name


BIAS_CASES = [("lstm", {}), ("gru", {}), ("gru", {"reset_after": False}), ("rnn", {})]


@needs_numpy_openblas
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,options", BIAS_CASES, ids=[f"{c}-{','.join(o) or 'default'}"
                                                          for c, o in BIAS_CASES])
def test_bias_gradients_in_the_blocks_of_the_weight_gradients(cell, options, dtype, monkeypatch):
    """The bias gradients are summed in the blocks and threads of the weight gradients'
    products (each block's rows of ``dz``, every term added in float64 in row order): with
    those products in 3 blocks (a threshold lowered so that small ones split) they are bitwise
    the sums of one block. The weight gradients agree to the BLAS's last bits (its kernel for
    a block of one or two rows may order a sum differently)."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    layer = make_layer(cell, 6, 11, dtype=dtype, seed=3, **options)
    x = np.random.default_rng(0).standard_normal((9, 13, 6)).astype(dtype)
    one = _run(layer, x, None)
    monkeypatch.setattr(_threads, "MIN_PRODUCT_BYTES_PER_BLOCK", 1)
    assert len(_threads.product_blocks(11, 1)) == 1
    lstm_np.set_num_threads(3)
    try:
        assert len(_threads.product_blocks(11, 1)) == 3
        three = _run(layer, x, None)
    finally:
        lstm_np.set_num_threads(1)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    assert any(name.startswith("dbias") for name in one)
    for name in one:
        if name.startswith("dbias"):
            assert np.array_equal(one[name], three[name]), name
        else:
            scale = np.abs(one[name]).max() + 1.0
            assert np.abs(one[name] - three[name]).max() <= tol * scale, name


@needs_numpy_openblas
def test_blas_setting_is_taken_and_given_back():
    before = _blas._lib.scipy_openblas_get_num_threads64_()
    lstm_np.set_num_threads(2)
    try:
        assert lstm_np.get_num_threads() == 2
        assert _blas._lib.scipy_openblas_get_num_threads64_() == 1
        lstm_np.set_num_threads(2)                          # again: the setting kept is NumPy's
    finally:
        lstm_np.set_num_threads(1)
    assert lstm_np.get_num_threads() == 1
    assert _blas._lib.scipy_openblas_get_num_threads64_() == before



@needs_numpy_openblas
def test_a_blas_raised_after_set_num_threads_is_warned_of_and_taken_back(monkeypatch):
    """NumPy's BLAS raised again after ``set_num_threads(2)`` (as ``threadpoolctl`` does): the
    next parallel call warns and names the way out, and gives the same results; calling
    ``set_num_threads(2)`` again takes the BLAS back to one thread (no warning after that), and
    ``set_num_threads(1)`` gives back the number it was raised to. A call in one block (small
    work) neither warns nor changes anything."""
    import warnings
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = _blas.get_threads()
    layer = make_layer("lstm", 6, 11, dtype=np.float64, seed=3)
    x = np.random.default_rng(0).standard_normal((9, 13, 6))
    alone, _ = layer(x)
    lstm_np.set_num_threads(2)
    try:
        _blas.set_threads(3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            small, _ = layer(x)                                 # one block: too little work
        assert _blas.get_threads() == 3 and np.array_equal(small, alone)
        monkeypatch.setattr(_threads, "MIN_STEP_BYTES_PER_BLOCK", 0)   # now in two blocks
        layer = make_layer("lstm", 6, 11, dtype=np.float64, seed=3)    # (the plan is kept)
        with pytest.warns(RuntimeWarning, match=r"NumPy's BLAS runs 3 threads beside "
                          r"lstm_np's 2.*call lstm_np.set_num_threads\(2\) again"):
            warned, _ = layer(x)
        assert np.array_equal(warned, alone)
        lstm_np.set_num_threads(2)
        assert _blas.get_threads() == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again, _ = layer(x)
        assert np.array_equal(again, alone)
    finally:
        lstm_np.set_num_threads(1)
        restored = _blas.get_threads()
        _blas.set_threads(before)
    assert restored == 3

def test_threads_are_refused_where_the_loops_cannot_call_the_blas(monkeypatch):
    """Without NumPy's OpenBLAS the loops step in Python, and threads would only trade the GIL:
    ``set_num_threads(n > 1)`` says so and changes nothing; 1 is still accepted."""
    monkeypatch.setattr(_blas, "FOUND", False)
    with pytest.raises(RuntimeError, match="threads need the compiled loops to call NumPy's BLAS"):
        lstm_np.set_num_threads(2)
    assert lstm_np.get_num_threads() == 1 and _threads._executor is None
    lstm_np.set_num_threads(1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None, 10 ** 6])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match=f"set_num_threads: expected an int from 1 to "
                                         f"{os.cpu_count()}.*got {bad!r}"):
        lstm_np.set_num_threads(bad)
    assert lstm_np.get_num_threads() == 1


@needs_numpy_openblas
@pytest.mark.parametrize("rows,min_rows,expected", [
    (13, 4, [(0, 4), (4, 8), (8, 13)]),     # three threads, blocks of at least 4
    (11, 4, [(0, 5), (5, 11)]),             # only two blocks of 4 fit
    (7, 4, [(0, 7)]),                       # one block
    (3, 1, [(0, 1), (1, 2), (2, 3)]),
])
def test_row_blocks_cover_every_row_once(three_threads, rows, min_rows, expected):
    assert _threads.row_blocks(rows, min_rows) == expected


@needs_numpy_openblas
def test_an_error_in_any_block_reaches_the_caller_after_every_block_ends(three_threads):
    done = []

    def run(r0, r1):
        if r0 == 4:
            raise ArithmeticError("block (4, 8) failed")
        done.append((r0, r1))

    with pytest.raises(ArithmeticError, match=r"block \(4, 8\) failed"):
        _threads.in_blocks(run, _threads.row_blocks(13))
    assert sorted(done) == [(0, 4), (8, 13)]


@needs_numpy_openblas
@pytest.mark.parametrize("pool", ["shut down", "gone"])
def test_blocks_cut_before_the_pool_changed_still_all_run(three_threads, monkeypatch, pool):
    """Another thread may call ``set_num_threads`` between the cutting of the blocks and their
    run: the blocks the pool cannot take run in the calling thread, and errors still arrive."""
    blocks = _threads.row_blocks(13)
    if pool == "shut down":
        _threads._executor.shutdown(wait=True)
    else:
        monkeypatch.setattr(_threads, "_executor", None)
    done = []
    _threads.in_blocks(lambda r0, r1: done.append((r0, r1)), blocks)
    assert sorted(done) == blocks

    def fail_second(r0, r1):
        if r0 == 4:
            raise ArithmeticError("block (4, 8) failed")
        done.append((r0, r1))
    done.clear()
    with pytest.raises(ArithmeticError, match=r"block \(4, 8\) failed"):
        _threads.in_blocks(fail_second, blocks)
    assert sorted(done) == [(0, 4), (8, 13)]


@needs_numpy_openblas
def test_layers_stay_right_while_another_thread_changes_the_thread_count(monkeypatch):
    """A layer called in one thread while another switches between 1 and 3 threads gives the
    one-thread answer every time (float64: bitwise), and nothing raises."""
    import threading
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(_threads, "MIN_STEP_BYTES_PER_BLOCK", 0)   # small layers in blocks too
    layer = make_layer("lstm", 3, 6, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 13, 3))
    expected = layer(x)[0].copy()
    stop, errors, results = threading.Event(), [], []

    def switch():
        while not stop.is_set():
            for n in (3, 1):
                lstm_np.set_num_threads(n)

    switcher = threading.Thread(target=switch)
    switcher.start()
    try:
        for _ in range(60):
            try:
                results.append(np.array_equal(layer(x)[0], expected))
            except Exception as error:          # collected, to fail with it below
                errors.append(error)
    finally:
        stop.set()
        switcher.join()
        lstm_np.set_num_threads(1)
    assert not errors and all(results)


@needs_numpy_openblas
def test_a_time_loop_takes_a_thread_only_for_enough_work(three_threads):
    """A block of a time loop gets a thread only with ``MIN_STEP_BYTES_PER_BLOCK`` of work per
    step: a float32 RNN of 64 units does not split 8 rows, a float64 LSTM of 64 units does (4
    rows each: 4 x 256 x 80 x 8 bytes), and 13 float32 rows of an LSTM of 11 units stay one
    block however many threads."""
    small, large = make_layer("rnn", 16, 64, np.float32), make_layer("lstm", 16, 64, np.float64)
    assert small._plan(8)[0] == [(0, 8)]
    assert large._plan(8)[0] == [(0, 4), (4, 8)]
    assert large._plan(12)[0] == [(0, 4), (4, 8), (8, 12)]
    assert make_layer("lstm", 6, 11, np.float32)._plan(13)[0] == [(0, 13)]
    enough = _threads.MIN_STEP_BYTES_PER_BLOCK
    assert _threads.step_blocks(13, enough) == [(0, 4), (4, 8), (8, 13)]    # rows still count
    assert _threads.step_blocks(13, _threads.MIN_STEP_BYTES_PER_BLOCK // 5) == [(0, 6), (6, 13)]


@needs_numpy_openblas
def test_products_in_blocks(three_threads, monkeypatch):
    """``matmul`` splits the rows of a large product (here: large for a lowered threshold) and
    gives NumPy's answer; a small one stays in one block."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 40)), rng.standard_normal((40, 70))
    assert len(_threads.product_blocks(300, 40 * 70 * 8)) == 1
    monkeypatch.setattr(_threads, "MIN_PRODUCT_BYTES_PER_BLOCK", 8 * 40 * 70 * 100)
    assert len(_threads.product_blocks(300, 40 * 70 * 8)) == 3
    out = _threads.matmul(a, b, np.empty((300, 70)))
    assert np.allclose(out, a @ b, rtol=1e-13, atol=1e-13)
    seen = []

    def product(a_rows, b_, out_rows):                  # each block through the given product
        seen.append(a_rows.shape[0])
        np.matmul(a_rows, b_, out=out_rows)
    out = _threads.matmul(a, b, np.full((300, 70), np.nan), product)
    assert sorted(seen) == [100, 100, 100] and np.allclose(out, a @ b, rtol=1e-13, atol=1e-13)
