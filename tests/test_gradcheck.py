"""Finite-difference checks in float64 of every gradient, through ``lstm_np.gradcheck``."""
import numpy as np
import pytest

import lstm_np
from helpers import make_layer, random_state

pytestmark = pytest.mark.usefixtures("kernel_path")

CASES = [
    ("lstm", {}), ("lstm", {"num_layers": 2, "bidirectional": True}),
    ("lstm", {"proj_size": 2, "batch_first": True}),
    ("lstm", {"num_layers": 2, "dropout": 0.4}),
    ("gru", {}), ("gru", {"reset_after": False}),
    ("gru", {"reset_after": False, "num_layers": 2, "bidirectional": True}),
    ("gru", {"reset_after": False, "bias": False, "dropout": 0.3, "num_layers": 2}),
    ("rnn", {"nonlinearity": "tanh", "bidirectional": True}),
    ("rnn", {"nonlinearity": "relu", "num_layers": 2}),
]


@pytest.mark.parametrize("cell,options", CASES, ids=lambda v: str(v))
def test_gradcheck(cell, options):
    rng = np.random.default_rng(7)
    layer = make_layer(cell, 3, 4, **options)
    B = 2
    x = rng.standard_normal((B, 5, 3) if layer.batch_first else (5, B, 3))
    state = random_state(layer, B, rng)
    result = lstm_np.gradcheck(layer, x, state, tolerance=1e-6)
    assert result.ok, result


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradcheck_with_lengths(cell):
    rng = np.random.default_rng(8)
    layer = make_layer(cell, 2, 3, bidirectional=True)
    x = rng.standard_normal((5, 3, 2))
    result = lstm_np.gradcheck(layer, x, random_state(layer, 3, rng),
                               lengths=np.array([5, 2, 3]))
    assert result.ok, result


def test_gradcheck_catches_a_wrong_backward():
    """A backward that is off by a little must be reported: the check is not vacuous."""
    layer = make_layer("gru", 2, 3)
    original = layer.backward

    def slightly_wrong(tape, dy, dstate=None):
        grads = original(tape, dy, dstate)
        grads.dparams["weight_hh_l0"] = grads.dparams["weight_hh_l0"] * (1 + 1e-4)
        return grads

    layer.backward = slightly_wrong
    result = lstm_np.gradcheck(layer, np.random.default_rng(0).standard_normal((4, 2, 2)))
    assert not result.ok
    assert result.worst[0] == "weight_hh_l0"


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        lstm_np.gradcheck(make_layer("lstm", 2, 3, dtype=np.float32), np.zeros((3, 1, 2), np.float32))
