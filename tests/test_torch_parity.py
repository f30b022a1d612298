"""lstm_np equals torch.nn.LSTM/GRU/RNN: outputs, final states and every gradient.

Non-zero biases (drawn by the default init), random upstream gradients on ``y`` and on every
final state, float64 to 1e-10 relative and float32 to 1e-4 relative.
"""

import numpy as np
import pytest

from helpers import make_layer, max_relative_error, random_input, random_state, state_parts
from torch_reference import run_torch, torch_module

from lstm_np.gradcheck import float32_gradients

pytestmark = pytest.mark.usefixtures("kernel_path")

TOL = {np.float64: 1e-10, np.float32: 1e-4}

OPTIONS = [
    {},
    {"num_layers": 3},
    {"bidirectional": True},
    {"batch_first": True},
    {"bias": False},
    {"num_layers": 2, "bidirectional": True, "batch_first": True},
]
LSTM_ONLY = [{"proj_size": 3}, {"proj_size": 2, "num_layers": 2, "bidirectional": True}]


def check_parity(cell, options, dtype, T=6, B=3, I=4, H=5, lengths=None, unbatched=False,
                 seed=0):
    rng = np.random.default_rng(seed)
    layer = make_layer(cell, I, H, dtype=dtype, seed=seed, **options)
    assert all(np.any(v != 0) for k, v in layer.params.items() if k.startswith("bias"))
    x = random_input(layer, T, B, rng, unbatched)
    state = random_state(layer, B, rng, unbatched)
    y, state_n, tape = layer.forward(x, state, lengths=lengths)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dstate = tuple(rng.standard_normal(s.shape).astype(dtype) for s in state_parts(state_n))
    dstate = dstate if isinstance(state_n, tuple) else dstate[0]
    grads = layer.backward(tape, dy, dstate)

    y_ref, state_ref, g_ref = run_torch(torch_module(layer), x, state, dy, dstate, lengths)
    tol = TOL[dtype]
    errors = {"y": max_relative_error(y, y_ref)}
    for name, a, b in zip(layer.state_names, state_parts(state_n), state_parts(state_ref)):
        errors[name + "_n"] = max_relative_error(a, b)
    errors["dx"] = max_relative_error(grads.dx, g_ref["x"])
    for name, a in zip(layer.state_names, state_parts(grads.dstate)):
        errors["d" + name + "0"] = max_relative_error(a, g_ref[name + "0"])
    for name in layer.params:
        errors["d" + name] = max_relative_error(grads.dparams[name], g_ref[name])
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"{cell} {options} {np.dtype(dtype)}: errors above {tol}: {bad}"
    return errors


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_each_option(cell, options, dtype):
    check_parity(cell, options, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", LSTM_ONLY, ids=lambda o: ",".join(o))
def test_lstm_projection(options, dtype):
    check_parity("lstm", options, dtype)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_nonlinearity(nonlinearity):
    check_parity("rnn", {"nonlinearity": nonlinearity, "num_layers": 2}, np.float64)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_unbatched(cell):
    check_parity(cell, {"num_layers": 2, "bidirectional": True}, np.float64, unbatched=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", [{}, {"bidirectional": True, "num_layers": 2},
                                     {"batch_first": True, "bidirectional": True}],
                         ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_lengths_match_packed_sequences(cell, options, dtype):
    lengths = np.array([7, 2, 5, 1, 7])
    check_parity(cell, options, dtype, T=7, B=5, lengths=lengths)


def test_lengths_with_projection():
    check_parity("lstm", {"proj_size": 2, "bidirectional": True, "num_layers": 2}, np.float64,
                 T=6, B=4, lengths=np.array([3, 6, 1, 4]))


def _random_combinations(count, seed):
    rng = np.random.default_rng(seed)
    for n in range(count):
        cell = ["lstm", "gru", "rnn"][rng.integers(3)]
        options = {"num_layers": int(rng.integers(1, 4)),
                   "bidirectional": bool(rng.integers(2)),
                   "batch_first": bool(rng.integers(2)),
                   "bias": bool(rng.integers(2))}
        H = int(rng.integers(1, 9))
        if cell == "lstm" and rng.integers(2) and H > 1:
            options["proj_size"] = int(rng.integers(1, H))
        if cell == "rnn":
            options["nonlinearity"] = ["tanh", "relu"][rng.integers(2)]
        T, B, I = (int(v) for v in rng.integers(1, 9, 3))
        lengths = rng.integers(1, T + 1, B) if rng.integers(2) else None
        dtype = [np.float64, np.float32][rng.integers(2)]
        yield pytest.param(cell, options, dtype, T, B, I, H, lengths, 100 + n, id=f"combo{n}")


@pytest.mark.parametrize("cell,options,dtype,T,B,I,H,lengths,seed",
                         list(_random_combinations(24, seed=2024)))
def test_random_combinations(cell, options, dtype, T, B, I, H, lengths, seed):
    check_parity(cell, options, dtype, T=T, B=B, I=I, H=H, lengths=lengths, seed=seed)


def test_parity_test_can_fail():
    """A gradient off by 1e-8 relative must be caught: the comparison is not vacuous."""
    rng = np.random.default_rng(0)
    layer = make_layer("lstm", 3, 4)
    x = random_input(layer, 5, 2, rng)
    y, state_n, tape = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    grads = layer.backward(tape, dy)
    zeros = tuple(np.zeros_like(s) for s in state_n)
    _, _, ref = run_torch(torch_module(layer), x, zeros, dy, zeros)
    good = grads.dparams["bias_ih_l0"]
    assert max_relative_error(good, ref["bias_ih_l0"]) <= 1e-10
    wrong = good.copy()
    wrong[np.argmax(np.abs(wrong))] *= 1 + 1e-8
    assert max_relative_error(wrong, ref["bias_ih_l0"]) > 1e-10


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("I,H,joined", [(130, 5, True), (100, 40, False), (16, 64, True)])
def test_lstm_step_product_joined_or_not(I, H, joined, dtype):
    """The LSTM's tiled step makes ``[x_t, h_{t-1}] [W_ih^T; W_hh^T]`` as one product when that
    saves a pass of the tiles (here over one pass and over two), else as two; the BLAS step
    makes both apart at ``I <= P`` and ``I + P <= 384`` (here ``(16, 64)``), else takes
    ``x W_ih^T`` from one product before the loop. All equal torch, also with a projection
    (``P = 3``: joined in every case on the tiles, ``x W_ih^T`` first on the BLAS), two layers
    and both directions."""
    from lstm_np.kernels._tiles import saves_a_pass
    assert saves_a_pass(I, H) == joined
    check_parity("lstm", {}, dtype, T=5, B=5, I=I, H=H)
    check_parity("lstm", {"proj_size": 3, "num_layers": 2, "bidirectional": True}, dtype,
                 T=4, B=2, I=I, H=H)


@pytest.mark.parametrize("cell,T,B,I,H", [("lstm", 40, 32, 32, 128), ("gru", 40, 32, 32, 128),
                                          ("rnn", 40, 32, 32, 128), ("lstm", 40, 16, 16, 64)])
def test_float32_gradients_about_as_close_to_float64_as_torchs(cell, T, B, I, H):
    """The issue's accuracy standard, on every kernel path, as far as it holds: over the weight
    and bias gradients, lstm_np's float32 error against the float64 result is at most torch's
    float32 error in the median and at most twice it for any one parameter. (Entry by entry it
    is data-dependent: over eight inputs per cell and path at this shape, lstm_np's error was the
    larger one in 1-5 of 32 entries, by up to 1.6x, and 0.4-0.7x torch's in the median.) The
    tiles' first summation, one chain of fused multiply-adds over all of ``K``, failed this
    (GRU ``bias_ih`` 2.9x torch's error on the tiles path). The LSTM at (16, 16, 64) takes
    the tiles' joined step (one product over ``[x_t, h_{t-1}]``): over four inputs, medians
    0.49-0.73 and at most 1.39 of torch's error."""
    import torch
    rng = np.random.default_rng(7)
    layer64 = make_layer(cell, I, H, dtype=np.float64, seed=1)
    x = rng.standard_normal((T, B, I))
    r = rng.standard_normal((T, B, H))
    g64, g32, layer32 = float32_gradients(layer64, x, r)
    assert layer32.dtype == np.float32
    module = torch_module(layer32)
    y, _ = module(torch.from_numpy(x.astype(np.float32)))
    (y * torch.from_numpy(r.astype(np.float32))).sum().backward()
    ratios = {name: max_relative_error(g32[name], g64[name])
              / max_relative_error(getattr(module, name).grad.numpy(), g64[name])
              for name in layer64.params}
    assert np.median(list(ratios.values())) <= 1.0, ratios
    assert max(ratios.values()) <= 2.0, ratios
