"""Stepping one input at a time equals running the whole sequence."""
import numpy as np
import pytest

import lstm_np
from helpers import make_layer, max_relative_error, random_state, state_parts

CASES = [("lstm", {}), ("lstm", {"num_layers": 2, "proj_size": 2}), ("lstm", {"bias": False}),
         ("gru", {"num_layers": 2}), ("gru", {"reset_after": False}),
         ("rnn", {"nonlinearity": "relu", "num_layers": 3}), ("rnn", {})]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell,options", CASES)
def test_steps_equal_sequence(cell, options, dtype):
    rng = np.random.default_rng(3)
    layer = make_layer(cell, 3, 5, dtype=dtype, **options)
    T, B = 7, 4
    x = rng.standard_normal((T, B, 3)).astype(dtype)
    state = random_state(layer, B, rng)
    y, state_n = layer(x, state)
    stream = layer.stream(batch_size=B, state=state)
    ys = np.stack([stream.step(x[t]) for t in range(T)])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert max_relative_error(ys, y) <= tol
    for a, b in zip(state_parts(stream.state), state_parts(state_n)):
        assert max_relative_error(a, b) <= tol


def test_unbatched_step_and_reset():
    layer = lstm_np.LSTM(2, 3, dtype=np.float64, seed=0)
    stream = layer.stream()
    x = np.random.default_rng(0).standard_normal((4, 2))
    first = [stream.step(v) for v in x]
    assert first[0].shape == (3,)
    stream.reset()
    again = [stream.step(v) for v in x]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_reset_slots_changes_only_those_rows():
    layer = lstm_np.GRU(2, 3, dtype=np.float64, seed=0)
    stream = layer.stream(batch_size=4)
    stream.step(np.ones((4, 2)))
    before = stream.state.copy()
    stream.reset([1, 3])
    after = stream.state
    assert np.all(after[:, [1, 3]] == 0)
    assert np.array_equal(after[:, [0, 2]], before[:, [0, 2]])
    stream.step(np.ones((4, 2)))
    stream.reset(np.array([True, False, False, False]))
    assert np.all(stream.state[:, 0] == 0) and np.all(stream.state[:, 1:] != 0)


def test_state_is_a_copy_and_refresh():
    layer = lstm_np.RNN(2, 3, dtype=np.float64, seed=0)
    stream = layer.stream(batch_size=2)
    y1 = stream.step(np.ones((2, 2)))
    s = stream.state
    s[...] = 99.0
    assert not np.any(stream.state == 99.0)
    y1[...] = 5.0   # the returned output is not the internal buffer
    assert not np.any(stream.state == 5.0)
    layer.params["weight_ih_l0"][...] = 0.0
    stream.reset()
    unchanged = stream.step(np.ones((2, 2)))
    stream.refresh()
    stream.reset()
    changed = stream.step(np.ones((2, 2)))
    assert not np.array_equal(unchanged, changed)


def test_stream_errors():
    layer = lstm_np.LSTM(2, 3, dtype=np.float64)
    with pytest.raises(ValueError, match="unidirectional"):
        lstm_np.LSTM(2, 3, bidirectional=True).stream()
    stream = layer.stream(batch_size=2)
    state = stream.state
    with pytest.raises(ValueError, match=r"step input x: expected shape \(2, 2\), got \(3, 2\)"):
        stream.step(np.ones((3, 2)))
    with pytest.raises(TypeError, match="expected dtype float64"):
        stream.step(np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="finite"):
        stream.step(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"slots: expected indices in \[0, 1\]"):
        stream.reset([2])
    assert all(np.array_equal(a, b) for a, b in zip(state, stream.state))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_input_form_takes_the_same_step(cell):
    """The fast path (a C-contiguous array of the layer's dtype) and the checked path (anything
    else array-like) give bitwise the same outputs and state."""
    layer = make_layer(cell, 3, 4, dtype=np.float64, num_layers=2)
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((5, 3))
    reference = layer.stream()
    expected = [reference.step(np.ascontiguousarray(v)) for v in xs]
    wide = np.zeros((5, 6))
    wide[:, ::2] = xs                                   # strided rows
    read_only = xs.copy()
    read_only.flags.writeable = False
    forms = {"strided": list(wide[:, ::2]), "read_only": list(read_only),
             "list": [v.tolist() for v in xs], "batched (1, I)": [v[None, :] for v in xs]}
    for name, inputs in forms.items():
        stream = layer.stream()
        ys = [stream.step(v) for v in inputs]
        for y, e in zip(ys, expected):
            assert np.array_equal(y.reshape(e.shape), e), name
        assert np.array_equal(stream.state if cell != "lstm" else stream.state[1],
                              reference.state if cell != "lstm" else reference.state[1]), name
    stream = layer.stream()
    y = stream.step(xs[0])
    y[...] = 7.0                                        # the output is a new array
    assert np.array_equal(stream.step(xs[1]), expected[1])
