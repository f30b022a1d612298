"""The kernels equal the slow, obvious reference in tests/naive.py (forward for every option,
BPTT step by step for one layer), including the GRU form torch does not have."""
import numpy as np
import pytest

import naive
from helpers import make_layer, max_relative_error, random_state, state_parts

pytestmark = pytest.mark.usefixtures("kernel_path")

FORWARD_CASES = [
    ("lstm", {}), ("lstm", {"num_layers": 2, "bidirectional": True}),
    ("lstm", {"proj_size": 2, "bidirectional": True}),
    ("gru", {}), ("gru", {"reset_after": False, "num_layers": 2, "bidirectional": True}),
    ("gru", {"reset_after": False, "bias": False}),
    ("rnn", {"nonlinearity": "relu", "bidirectional": True}), ("rnn", {"num_layers": 3}),
]


@pytest.mark.parametrize("cell,options", FORWARD_CASES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_forward_equals_naive(cell, options, with_lengths):
    rng = np.random.default_rng(1)
    T, B = 6, 4
    layer = make_layer(cell, 3, 5, **options)
    x = rng.standard_normal((T, B, 3))
    state = random_state(layer, B, rng)
    lengths = np.array([6, 3, 1, 5]) if with_lengths else None
    y, state_n = layer(x, state, lengths=lengths)
    parts = state_parts(state)
    extra = {k: v for k, v in options.items() if k in ("reset_after", "nonlinearity")}
    y_ref, h_ref, c_ref = naive.forward(
        cell, layer.params, x, parts[0], parts[1] if cell == "lstm" else None, lengths,
        layer.num_layers, layer.bidirectional, **extra)
    assert max_relative_error(y, y_ref) <= 1e-12
    assert max_relative_error(state_parts(state_n)[0], h_ref) <= 1e-12
    if cell == "lstm":
        assert max_relative_error(state_n[1], c_ref) <= 1e-12


def _grads(layer, rng, T=7, B=3):
    x = rng.standard_normal((T, B, layer.input_size))
    state = random_state(layer, B, rng)
    y, state_n, tape = layer.forward(x, state)
    dy = rng.standard_normal(y.shape)
    dstate = tuple(rng.standard_normal(s.shape) for s in state_parts(state_n))
    grads = layer.backward(tape, dy, dstate if len(dstate) > 1 else dstate[0])
    return x, state_parts(state), dy, dstate, grads


def _assert_equal_to_naive(grads, dx, dstate, dparams):
    assert max_relative_error(grads.dx, dx) <= 1e-12
    for ours, ref in zip(state_parts(grads.dstate), dstate):
        assert max_relative_error(ours, ref) <= 1e-12
    for name, value in dparams.items():
        assert max_relative_error(grads.dparams[name], value) <= 1e-12, name


def test_lstm_backward_equals_naive():
    layer = make_layer("lstm", 3, 4)
    x, (h0, c0), dy, (dh, dc), grads = _grads(layer, np.random.default_rng(2))
    dx, dh0, dc0, dparams = naive.lstm_backward(layer.params, x, h0, c0, dy, dh, dc)
    _assert_equal_to_naive(grads, dx, [dh0, dc0], dparams)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_backward_equals_naive(reset_after):
    layer = make_layer("gru", 3, 4, reset_after=reset_after)
    x, (h0,), dy, (dh,), grads = _grads(layer, np.random.default_rng(3))
    dx, dh0, dparams = naive.gru_backward(layer.params, x, h0, dy, dh, reset_after)
    _assert_equal_to_naive(grads, dx, [dh0], dparams)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_backward_equals_naive(nonlinearity):
    layer = make_layer("rnn", 3, 4, nonlinearity=nonlinearity)
    x, (h0,), dy, (dh,), grads = _grads(layer, np.random.default_rng(4))
    dx, dh0, dparams = naive.rnn_backward(layer.params, x, h0, dy, dh, nonlinearity)
    _assert_equal_to_naive(grads, dx, [dh0], dparams)


def test_gru_forms_differ():
    """The two GRU forms are different functions of the same parameters."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 3))
    a = make_layer("gru", 3, 4, reset_after=True)
    b = make_layer("gru", 3, 4, reset_after=False)
    b.load_state_dict(a.params)
    assert max_relative_error(a(x)[0], b(x)[0]) > 1e-3


INFERENCE_CASES = [
    {}, {"num_layers": 2, "bidirectional": True}, {"proj_size": 2}, {"bias": False},
    {"proj_size": 3, "bidirectional": True, "num_layers": 2}, {"batch_first": True},
]


@pytest.mark.parametrize("options", INFERENCE_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_lstm_inference_path_equals_training_forward(options, dtype, with_lengths):
    """``layer(x)`` runs a kernel that keeps no tape (per-step scratch, ping-pong cell state);
    it does the training forward's arithmetic, so outputs and final state are bitwise equal."""
    rng = np.random.default_rng(11)
    T, B = 9, 5
    layer = make_layer("lstm", 3, 6, dtype=dtype, **options)
    x = rng.standard_normal((B, T, 3) if options.get("batch_first") else (T, B, 3)).astype(dtype)
    x = np.swapaxes(np.swapaxes(x, 0, 1).copy(), 0, 1)        # same values, not C-contiguous
    state = random_state(layer, B, rng)
    lengths = np.array([9, 4, 1, 9, 6]) if with_lengths else None
    y_inf, s_inf = layer(x, state, lengths=lengths)
    y_fwd, s_fwd, _ = layer.forward(x, state, lengths=lengths)
    assert np.array_equal(y_inf, y_fwd)
    for a, b in zip(state_parts(s_inf), state_parts(s_fwd)):
        assert np.array_equal(a, b)
    if not options:        # odd and even T: the final c is in either half of the ping-pong
        short = None if lengths is None else np.minimum(lengths, T - 1)
        _, s_even = layer(x[:T - 1], state, lengths=short)
        _, t_even, _ = layer.forward(x[:T - 1], state, lengths=short)
        assert np.array_equal(s_even[1], t_even[1])
