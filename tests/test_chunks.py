"""Two chunks with carried state equal one long sequence, forward and backward: the stateful
idea at the level of one layer (the first chunk's backward receives the second's ``dstate``)."""
import numpy as np
import pytest

from helpers import make_layer, max_relative_error, random_state, state_parts

pytestmark = pytest.mark.usefixtures("kernel_path")


@pytest.mark.parametrize("cell,options", [
    ("lstm", {}), ("lstm", {"num_layers": 2, "proj_size": 2}), ("gru", {"num_layers": 2}),
    ("gru", {"reset_after": False}), ("rnn", {"nonlinearity": "relu"}),
    ("lstm", {"batch_first": True}),
])
@pytest.mark.parametrize("split", [1, 4, 8])
def test_chunks_equal_whole(cell, options, split):
    rng = np.random.default_rng(11)
    T, B = 9, 3
    layer = make_layer(cell, 3, 4, **options)
    axis = 1 if layer.batch_first else 0
    x = rng.standard_normal((B, T, 3) if layer.batch_first else (T, B, 3))
    state = random_state(layer, B, rng)

    y, state_n, tape = layer.forward(x, state)
    dy = rng.standard_normal(y.shape)
    dstate_parts = [rng.standard_normal(s.shape) for s in state_parts(state_n)]
    dstate = tuple(dstate_parts) if len(dstate_parts) > 1 else dstate_parts[0]
    whole = layer.backward(tape, dy, dstate)

    first, second = np.split(x, [split], axis=axis)
    dy1, dy2 = np.split(dy, [split], axis=axis)
    y1, s1, tape1 = layer.forward(first, state)
    y2, s2, tape2 = layer.forward(second, s1)
    g2 = layer.backward(tape2, dy2, dstate)
    g1 = layer.backward(tape1, dy1, g2.dstate)

    assert max_relative_error(np.concatenate([y1, y2], axis=axis), y) <= 1e-13
    for a, b in zip(state_parts(s2), state_parts(state_n)):
        assert max_relative_error(a, b) <= 1e-13
    assert max_relative_error(np.concatenate([g1.dx, g2.dx], axis=axis), whole.dx) <= 1e-12
    for a, b in zip(state_parts(g1.dstate), state_parts(whole.dstate)):
        assert max_relative_error(a, b) <= 1e-12
    for name in layer.params:
        assert max_relative_error(g1.dparams[name] + g2.dparams[name],
                                  whole.dparams[name]) <= 1e-12, name
    # per-step hidden gradients line up too (time-major in Gradients.dh)
    assert max_relative_error(np.concatenate([g1.dh, g2.dh], axis=1), whole.dh) <= 1e-12


@pytest.mark.parametrize("split", [2, 5])
def test_per_step_gradients_equal_chunk_boundary_gradients(split):
    """``grads.dh[t]`` / ``grads.dc[t]`` are the total gradients reaching ``h_t`` / ``c_t``:
    at a chunk boundary they equal the second chunk's ``dstate`` (plus ``dy_t`` for ``h``)."""
    rng = np.random.default_rng(12)
    layer = make_layer("lstm", 2, 3)
    x = rng.standard_normal((7, 2, 2))
    y, state_n, tape = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    whole = layer.backward(tape, dy)
    _, s1, _ = layer.forward(x[:split])
    _, _, tape2 = layer.forward(x[split:], s1)
    g2 = layer.backward(tape2, dy[split:])
    assert max_relative_error(whole.dh[0, split - 1], g2.dstate[0][0] + dy[split - 1]) <= 1e-12
    # c_t reaches the loss through c_{t+1} (the second chunk's dstate) and through h_t = o tanh(c_t)
    t, H = split - 1, 3
    o = tape.gates()[t][:, 3 * H:]
    tanh_c = np.tanh(tape.steps[0]["c_seq"][t + 1])
    local = whole.dh[0, t] * o * (1 - tanh_c ** 2)
    assert max_relative_error(whole.dc[0, t], g2.dstate[1][0] + local) <= 1e-12
