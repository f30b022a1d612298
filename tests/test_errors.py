"""Bad input gets an error that names what was expected and what came, and changes nothing."""
import numpy as np
import pytest

import lstm_np


def _layer():
    return lstm_np.LSTM(3, 4, num_layers=2, dtype=np.float64, dropout=0.2, seed=0)


GOOD_X = np.zeros((5, 2, 3))
GOOD_STATE = (np.zeros((2, 2, 4)), np.zeros((2, 2, 4)))

CASES = [
    ("rank 1 input", dict(x=np.zeros(3)), ValueError, r"expected rank 2 or 3, got shape \(3,\)"),
    ("rank 4 input", dict(x=np.zeros((1, 2, 3, 4))), ValueError, "expected rank 2 or 3"),
    ("wrong input_size", dict(x=np.zeros((5, 2, 7))), ValueError,
     r"expected input_size 3 .* got shape \(5, 2, 7\)"),
    ("float32 into float64 layer", dict(x=np.zeros((5, 2, 3), np.float32)), TypeError,
     "expected dtype float64 .* got float32"),
    ("int input", dict(x=np.zeros((5, 2, 3), np.int64)), TypeError, "got dtype int64"),
    ("complex input", dict(x=np.zeros((5, 2, 3), complex)), TypeError, "got dtype complex128"),
    ("object input", dict(x=np.array([[[None] * 3] * 2] * 5)), TypeError, "got dtype object"),
    ("NaN input", dict(x=np.full((5, 2, 3), np.nan)), ValueError, "expected finite values"),
    ("Inf input", dict(x=np.r_[GOOD_X[:4], np.full((1, 2, 3), np.inf)]), ValueError, "finite"),
    ("T=0", dict(x=np.zeros((0, 2, 3))), ValueError, "at least one step"),
    ("B=0", dict(x=np.zeros((5, 0, 3))), ValueError, "at least one step and one sequence"),
    ("state not a tuple", dict(state=np.zeros((2, 2, 4))), TypeError, r"expected a tuple \('h', 'c'\)"),
    ("state wrong batch", dict(state=(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))), ValueError,
     r"state h: expected shape \(2, 2, 4\), got \(2, 3, 4\)"),
    ("state wrong layers", dict(state=(np.zeros((1, 2, 4)), np.zeros((1, 2, 4)))), ValueError,
     r"expected shape \(2, 2, 4\)"),
    ("state wrong dtype", dict(state=(np.zeros((2, 2, 4), np.float32),) * 2), TypeError,
     "state h: expected dtype float64"),
    ("state NaN", dict(state=(np.full((2, 2, 4), np.nan), np.zeros((2, 2, 4)))), ValueError,
     "state h: expected finite"),
    ("lengths too long", dict(lengths=[6, 2]), ValueError, r"expected values in \[1, 5\]"),
    ("lengths zero", dict(lengths=[0, 2]), ValueError, r"got min 0"),
    ("lengths wrong count", dict(lengths=[1, 2, 3]), ValueError, "expected 2 entries"),
    ("lengths floats", dict(lengths=[1.5, 2.0]), TypeError, "1-D array of ints"),
]


@pytest.mark.parametrize("what,kwargs,error,match", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("call", ["__call__", "forward"])
def test_bad_input_raises_and_changes_nothing(what, kwargs, error, match, call):
    layer = _layer()
    params = layer.state_dict()
    rng_state = layer.rng.bit_generator.state
    args = {"x": GOOD_X, "state": GOOD_STATE, "lengths": None, **kwargs}
    with pytest.raises(error, match=match):
        getattr(layer, call)(args["x"], args["state"], lengths=args["lengths"])
    assert all(np.array_equal(params[k], layer.params[k]) for k in params)
    assert layer.rng.bit_generator.state == rng_state


def test_backward_errors():
    layer = _layer()
    other = _layer()
    y, _, tape = layer.forward(GOOD_X)
    with pytest.raises(ValueError, match="tape of another layer"):
        layer.backward(other.forward(GOOD_X)[2], np.zeros_like(y))
    with pytest.raises(ValueError, match="expected the tape returned"):
        layer.backward({"not": "a tape"}, np.zeros_like(y))
    with pytest.raises(ValueError, match=r"dy: expected shape \(5, 2, 4\), got \(5, 2, 3\)"):
        layer.backward(tape, np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"dstate c: expected shape"):
        layer.backward(tape, np.zeros_like(y), (np.zeros((2, 2, 4)), np.zeros((2, 2, 5))))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(input_size=0, hidden_size=4), ValueError, "input_size: expected an int >= 1, got 0"),
    (dict(input_size=3, hidden_size=-1), ValueError, "hidden_size"),
    (dict(input_size=3.0, hidden_size=4), TypeError, "input_size: expected an int"),
    (dict(input_size=3, hidden_size=4, dropout=1.0), ValueError, r"dropout: expected a number in \[0, 1\)"),
    (dict(input_size=3, hidden_size=4, proj_size=4), ValueError, "proj_size"),
    (dict(input_size=3, hidden_size=4, dtype=np.int32), TypeError, "float32 or float64"),
    (dict(input_size=3, hidden_size=4, dtype=np.float16), TypeError, "float32 or float64"),
])
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        lstm_np.LSTM(**kwargs)


def test_rnn_nonlinearity_error():
    with pytest.raises(ValueError, match="expected 'tanh' or 'relu', got 'sigmoid'"):
        lstm_np.RNN(2, 3, nonlinearity="sigmoid")
