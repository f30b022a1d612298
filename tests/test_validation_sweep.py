"""Every public entry point refuses bad input with a clear message, and changes nothing:
parameters, state store, optimizer state, stream state and RNGs are bitwise unchanged."""
import numpy as np
import pytest

import lstm_np
from lstm_np.data import stateful_batches, windows


def make_world():
    rnn = lstm_np.GRU(2, 3, num_layers=2, batch_first=True, dtype=np.float64, seed=0)
    model = lstm_np.Sequential([rnn, lstm_np.Linear(3, 1, dtype=np.float64, seed=1)])
    opt = lstm_np.Adam(model.params, lr=0.01)
    trainer = lstm_np.Trainer(model, lstm_np.mse, opt, stateful=True, batch_size=2, progress=False)
    x = np.random.default_rng(0).standard_normal((4, 5, 2))
    trainer.fit(x, x[:, :, :1], epochs=1)          # non-trivial optimizer and store state
    stream = rnn.stream(batch_size=2)
    stream.step(np.ones((2, 2)))
    return {"rnn": rnn, "model": model, "opt": opt, "trainer": trainer, "stream": stream,
            "store": trainer.store}


def snapshot(world):
    t = world["trainer"]
    return {"params": {k: v.copy() for k, v in world["model"].params.items()},
            "opt": world["opt"].state_dict(), "store": world["store"].arrays(),
            "stream": world["stream"].state.copy(), "rng": t.rng.bit_generator.state,
            "layer_rng": world["rnn"].rng.bit_generator.state,
            "position": (t.epoch, t.batch)}


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


X_BAD_RANK = np.zeros((5, 2))


CASES = [
    ("layer: int input", lambda w: w["rnn"](np.zeros((2, 5, 2), np.int64)), TypeError, "got dtype int64"),
    ("layer: complex input", lambda w: w["rnn"](np.zeros((2, 5, 2), complex)), TypeError, "complex128"),
    ("layer: object input", lambda w: w["rnn"](np.empty((2, 5, 2), object)), TypeError, "object"),
    ("layer: NaN", lambda w: w["rnn"].forward(np.full((2, 5, 2), np.nan)), ValueError, "finite"),
    ("layer: T=0", lambda w: w["rnn"](np.zeros((2, 0, 2))), ValueError, "at least one step"),
    ("layer: B=0", lambda w: w["rnn"](np.zeros((0, 5, 2))), ValueError, "one sequence"),
    ("layer: state from another model", lambda w: w["rnn"](np.zeros((2, 5, 2)), np.zeros((1, 2, 7))),
     ValueError, r"expected shape \(2, 2, 3\), got \(1, 2, 7\)"),
    ("layer: lengths too long", lambda w: w["rnn"].forward(np.zeros((2, 5, 2)), lengths=[9, 1]),
     ValueError, r"\[1, 5\]"),
    ("layer: load absurd shape", lambda w: w["rnn"].load_state_dict({"weight_ih_l0": np.zeros((10 ** 4, 2))}, strict=False),
     ValueError, "expected shape"),
    ("model: wrong states count", lambda w: w["model"](np.zeros((2, 5, 2)), [None, None]),
     ValueError, "expected 1 entries"),
    ("model: NaN dy", lambda w: w["model"].backward(w["model"].forward(np.zeros((2, 5, 2)))[2],
                                                    np.full((2, 5, 1), np.nan)), ValueError, "NaN/Inf"),
    ("model: load wrong key", lambda w: w["model"].load_state_dict({"9.weight": np.zeros(1)}),
     KeyError, "unexpected keys"),
    ("stream: wrong batch", lambda w: w["stream"].step(np.zeros((3, 2))), ValueError, r"expected shape \(2, 2\)"),
    ("stream: Inf", lambda w: w["stream"].step(np.array([[np.inf, 0], [0, 0]])), ValueError, "finite"),
    ("stream: bad slots", lambda w: w["stream"].reset([5]), ValueError, r"\[0, 1\]"),
    ("store: wrong batch write", lambda w: w["store"].write([np.zeros((2, 3, 3))]), ValueError,
     r"expected shape \(2, 2, 3\)"),
    ("store: bool mask size", lambda w: w["store"].reset(np.array([True])), ValueError, "boolean mask"),
    ("store: float slots", lambda w: w["store"].reset([0.5]), TypeError, "row indices"),
    ("trainer: N not a multiple", lambda w: w["trainer"].fit(np.zeros((3, 5, 2)), np.zeros((3, 5, 1))),
     ValueError, "multiple of batch_size=2"),
    ("trainer: y rows", lambda w: w["trainer"].fit(np.zeros((4, 5, 2)), np.zeros((2, 5, 1))),
     ValueError, "expected 4 rows"),
    ("trainer: NaN target", lambda w: w["trainer"].fit(np.zeros((4, 5, 2)), np.full((4, 5, 1), np.nan)),
     ValueError, "y: expected finite"),
    ("trainer: predict rank", lambda w: w["trainer"].predict(X_BAD_RANK), ValueError, r"\(N, T, F\)"),
    ("trainer: predict remainder", lambda w: w["trainer"].predict(np.zeros((3, 5, 2))), ValueError,
     "batch_size=2"),
    ("optimizer: missing grad", lambda w: w["opt"].step({}), KeyError, "missing"),
    ("optimizer: wrong grad shape", lambda w: w["opt"].step(
        {k: np.zeros(1) for k in w["model"].params}), ValueError, "has shape"),
    ("loss: label range", lambda w: lstm_np.cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
     ValueError, r"\[0, 2\]"),
    ("loss: float labels", lambda w: lstm_np.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])),
     TypeError, "integer class"),
    ("loss: shape", lambda w: lstm_np.mse(np.zeros(3), np.zeros(4)), ValueError, "expected shape"),
    ("data: NaN series", lambda w: stateful_batches(np.array([1.0, np.nan, 2.0] * 10), 2, 3), ValueError, "finite"),
    ("data: negative window", lambda w: windows(np.arange(9.0), -2), ValueError, ">= 1"),
    ("data: string series", lambda w: windows(np.array(["a", "b"]), 1), TypeError, "expected numbers"),
    ("convert: not a layer", lambda w: lstm_np.to_onnx(w["model"]), TypeError, "expected an lstm_np"),
    ("convert: bad cell", lambda w: lstm_np.from_keras({}, "lstmx"), ValueError, "cell"),
    ("save: unknown object", lambda w: lstm_np.save(object(), "never.npz"), TypeError, "cannot describe"),
]


@pytest.mark.parametrize("what,call,error,match", CASES, ids=[c[0] for c in CASES])
def test_refused_and_nothing_changed(what, call, error, match):
    world = make_world()
    before = snapshot(world)
    with pytest.raises(error, match=match):
        call(world)
    assert same(before, snapshot(world)), f"{what}: a failed call changed state"


def test_determinism_same_seed_bitwise():
    runs = []
    for _ in range(2):
        w = make_world()
        x = np.random.default_rng(5).standard_normal((8, 5, 2))
        w["trainer"].fit(x, x[:, :, :1], epochs=3)
        runs.append({k: v.copy() for k, v in w["model"].params.items()})
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_float64_independent_of_thread_count():
    from threadpoolctl import threadpool_limits
    results = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            layer = lstm_np.LSTM(64, 128, dtype=np.float64, seed=0)
            layer.kernel = "blas"
            x = np.random.default_rng(0).standard_normal((20, 64, 64))
            y, _, tape = layer.forward(x)
            g = layer.backward(tape, np.ones_like(y))
            results.append((y, g.dparams["weight_hh_l0"], g.dx))
    for a, b in zip(*results):
        assert np.array_equal(a, b)
