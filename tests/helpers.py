"""Shared helpers for the tests: random inputs and the relative-error measure."""
import numpy as np

from lstm_np.gradcheck import max_relative_error  # noqa: F401  (re-exported for the tests)

CELLS = ("lstm", "gru", "rnn")


def make_layer(cell, input_size, hidden_size, dtype=np.float64, seed=0, **options):
    """Build an lstm_np layer of ``cell`` with non-zero biases (the default init draws them)."""
    import lstm_np
    cls = {"lstm": lstm_np.LSTM, "gru": lstm_np.GRU, "rnn": lstm_np.RNN}[cell]
    return cls(input_size, hidden_size, dtype=dtype, seed=seed, **options)


def random_input(layer, T, B, rng, unbatched=False):
    shape = (T, layer.input_size) if unbatched else (
        (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size))
    return rng.standard_normal(shape).astype(layer.dtype)


def random_state(layer, B, rng, unbatched=False):
    rows = layer.num_layers * layer.num_directions
    parts = tuple(rng.standard_normal((rows, n) if unbatched else (rows, B, n)).astype(layer.dtype)
                  for n in layer.state_sizes())
    return parts if len(parts) > 1 else parts[0]


def state_parts(state):
    return list(state) if isinstance(state, tuple) else [state]
