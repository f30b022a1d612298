"""Conversions: round trips, torch outputs after conversion, and Keras/ONNX layouts checked
against each framework's published equations, written out here."""
import numpy as np
import pytest
import torch

import lstm_np
from helpers import max_relative_error


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _random_biases(layer, seed=0):
    rng = np.random.default_rng(seed)
    for k, v in layer.params.items():
        v[...] = rng.uniform(-0.5, 0.5, v.shape)
    return layer


# ----------------------------------------------------------------------------- torch
@pytest.mark.parametrize("make", [
    lambda: torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64),
    lambda: torch.nn.GRU(3, 4, num_layers=2, batch_first=True, dtype=torch.float64),
    lambda: torch.nn.RNN(3, 4, nonlinearity="relu", bias=False, dtype=torch.float64),
    lambda: torch.nn.LSTM(2, 3, dtype=torch.float32),
])
def test_from_torch_module_and_state_dict(make):
    module = make()
    layer = lstm_np.from_torch(module)
    assert layer.batch_first == module.batch_first and layer.dtype == next(module.parameters()).detach().numpy().dtype
    x = np.random.default_rng(0).standard_normal(
        (2, 6, 3) if module.batch_first else (6, 2, module.input_size)).astype(layer.dtype)
    y, _ = layer(x)
    y_ref, _ = module(torch.from_numpy(x))
    tol = 1e-12 if layer.dtype == np.float64 else 1e-5
    assert max_relative_error(y, y_ref.detach().numpy()) <= tol
    # from the state dict alone: architecture inferred from keys and shapes
    again = lstm_np.from_torch(module.state_dict(), batch_first=module.batch_first,
                               nonlinearity=getattr(module, "nonlinearity", None))
    assert type(again) is type(layer) and again.config() == layer.config()
    back = lstm_np.to_torch_state_dict(again)
    assert list(back) == list(module.state_dict())
    assert all(np.array_equal(back[k], v.numpy()) for k, v in module.state_dict().items())


def test_to_torch_refuses_the_other_gru():
    with pytest.raises(ValueError, match="reset_after=False"):
        lstm_np.to_torch_state_dict(lstm_np.GRU(2, 3, reset_after=False))
    with pytest.raises(TypeError, match="expected a torch.nn.LSTM"):
        lstm_np.from_torch(torch.nn.Linear(2, 3))


# ----------------------------------------------------------------------------- Keras
def keras_lstm(x, kernel, recurrent_kernel, bias):
    """Keras LSTM (batch-first), gates i, f, c, o in the kernel's columns."""
    B, T, _ = x.shape
    U = recurrent_kernel.shape[0]
    h, c = np.zeros((B, U)), np.zeros((B, U))
    out = []
    for t in range(T):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f = sigmoid(z[:, :U]), sigmoid(z[:, U:2 * U])
        cc, o = np.tanh(z[:, 2 * U:3 * U]), sigmoid(z[:, 3 * U:])
        c = f * c + i * cc
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def keras_gru(x, kernel, recurrent_kernel, bias, reset_after):
    """Keras GRU (batch-first), gates z, r, h; ``h_t = z * h_{t-1} + (1 - z) * hh``."""
    B, T, _ = x.shape
    U = recurrent_kernel.shape[0]
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * U))
    h = np.zeros((B, U))
    out = []
    for t in range(T):
        xz = x[:, t] @ kernel + b_in
        hz = h @ recurrent_kernel + b_rec
        z = sigmoid(xz[:, :U] + hz[:, :U])
        r = sigmoid(xz[:, U:2 * U] + hz[:, U:2 * U])
        if reset_after:
            hh = np.tanh(xz[:, 2 * U:] + r * hz[:, 2 * U:])
        else:
            hh = np.tanh(xz[:, 2 * U:] + (r * h) @ recurrent_kernel[:, 2 * U:])
        h = z * h + (1 - z) * hh
        out.append(h)
    return np.stack(out, 1)


def keras_simple_rnn(x, kernel, recurrent_kernel, bias):
    B, T, _ = x.shape
    h = np.zeros((B, recurrent_kernel.shape[0]))
    out = []
    for t in range(T):
        h = np.tanh(x[:, t] @ kernel + h @ recurrent_kernel + bias)
        out.append(h)
    return np.stack(out, 1)


def _keras_weights(rng, I, U, G, bias_shape):
    return {"kernel": rng.standard_normal((I, G * U)) * 0.5,
            "recurrent_kernel": rng.standard_normal((U, G * U)) * 0.5,
            "bias": rng.standard_normal(bias_shape) * 0.5}


@pytest.mark.parametrize("cell,reset_after", [("lstm", True), ("gru", True), ("gru", False),
                                              ("rnn", True)])
def test_keras_layouts_follow_keras_equations(cell, reset_after):
    rng = np.random.default_rng(1)
    I, U = 3, 4
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    bias_shape = (2, 3 * U) if cell == "gru" and reset_after else (G * U,)
    w = _keras_weights(rng, I, U, G, bias_shape)
    x = rng.standard_normal((2, 5, I))
    layer = lstm_np.from_keras(w, cell, reset_after=reset_after, dtype=np.float64)
    y, _ = layer(x)
    if cell == "lstm":
        expected = keras_lstm(x, **w)
    elif cell == "gru":
        expected = keras_gru(x, **w, reset_after=reset_after)
    else:
        expected = keras_simple_rnn(x, **w)
    assert max_relative_error(y, expected) <= 1e-12
    back = lstm_np.to_keras(layer)[0]
    for key in w:
        np.testing.assert_allclose(back[key], w[key], rtol=0, atol=1e-15)


@pytest.mark.parametrize("cell,options", [("lstm", {"num_layers": 2, "bidirectional": True}),
                                          ("gru", {"reset_after": False, "num_layers": 2}),
                                          ("gru", {"bidirectional": True}),
                                          ("rnn", {"nonlinearity": "relu"})])
def test_keras_round_trip(cell, options):
    cls = {"lstm": lstm_np.LSTM, "gru": lstm_np.GRU, "rnn": lstm_np.RNN}[cell]
    layer = _random_biases(cls(3, 4, dtype=np.float64, batch_first=True, **options))
    again = lstm_np.from_keras(lstm_np.to_keras(layer), cell, bidirectional=layer.bidirectional,
                               reset_after=getattr(layer, "reset_after", True),
                               activation=getattr(layer, "nonlinearity", "tanh"))
    x = np.random.default_rng(2).standard_normal((2, 5, 3))
    # Keras keeps one bias, so the parameters differ; the function must not
    assert max_relative_error(again(x)[0], layer(x)[0]) <= 1e-13


# ----------------------------------------------------------------------------- ONNX
def onnx_lstm(x, W, R, B):
    """ONNX LSTM, forward direction 0, seq-major; gates i, o, f, c (operator spec)."""
    T, Bn, _ = x.shape
    H = R.shape[-1]
    Wi, Wo, Wf, Wc = np.split(W[0], 4)
    Ri, Ro, Rf, Rc = np.split(R[0], 4)
    Wb, Rb = np.split(B[0], 2)
    Wbi, Wbo, Wbf, Wbc = np.split(Wb, 4)
    Rbi, Rbo, Rbf, Rbc = np.split(Rb, 4)
    h, c = np.zeros((Bn, H)), np.zeros((Bn, H))
    out = []
    for t in range(T):
        X = x[t]
        it = sigmoid(X @ Wi.T + h @ Ri.T + Wbi + Rbi)
        ft = sigmoid(X @ Wf.T + h @ Rf.T + Wbf + Rbf)
        ct = np.tanh(X @ Wc.T + h @ Rc.T + Wbc + Rbc)
        c = ft * c + it * ct
        ot = sigmoid(X @ Wo.T + h @ Ro.T + Wbo + Rbo)
        h = ot * np.tanh(c)
        out.append(h)
    return np.stack(out)


def onnx_gru(x, W, R, B, linear_before_reset):
    """ONNX GRU, forward, gates z, r, h; ``Ht = (1 - zt) (.) ht + zt (.) Ht-1``."""
    T, Bn, _ = x.shape
    H = R.shape[-1]
    Wz, Wr, Wh = np.split(W[0], 3)
    Rz, Rr, Rh = np.split(R[0], 3)
    Wbz, Wbr, Wbh, Rbz, Rbr, Rbh = np.split(B[0], 6)
    h = np.zeros((Bn, H))
    out = []
    for t in range(T):
        X = x[t]
        zt = sigmoid(X @ Wz.T + h @ Rz.T + Wbz + Rbz)
        rt = sigmoid(X @ Wr.T + h @ Rr.T + Wbr + Rbr)
        if linear_before_reset:
            ht = np.tanh(X @ Wh.T + rt * (h @ Rh.T + Rbh) + Wbh)
        else:
            ht = np.tanh(X @ Wh.T + (rt * h) @ Rh.T + Rbh + Wbh)
        h = (1 - zt) * ht + zt * h
        out.append(h)
    return np.stack(out)


def onnx_rnn(x, W, R, B):
    T = x.shape[0]
    H = R.shape[-1]
    Wb, Rb = np.split(B[0], 2)
    h = np.zeros((x.shape[1], H))
    out = []
    for t in range(T):
        h = np.tanh(x[t] @ W[0].T + h @ R[0].T + Wb + Rb)
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("cell,lbr", [("lstm", 0), ("gru", 1), ("gru", 0), ("rnn", 0)])
def test_onnx_layouts_follow_onnx_equations(cell, lbr):
    rng = np.random.default_rng(3)
    I, H = 3, 4
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    w = {"W": rng.standard_normal((1, G * H, I)) * 0.5, "R": rng.standard_normal((1, G * H, H)) * 0.5,
         "B": rng.standard_normal((1, 2 * G * H)) * 0.5}
    x = rng.standard_normal((5, 2, I))
    layer = lstm_np.from_onnx(w, cell, linear_before_reset=lbr, dtype=np.float64)
    y, _ = layer(x)
    expected = {"lstm": lambda: onnx_lstm(x, **w), "gru": lambda: onnx_gru(x, **w, linear_before_reset=lbr),
                "rnn": lambda: onnx_rnn(x, **w)}[cell]()
    assert max_relative_error(y, expected) <= 1e-12
    back = lstm_np.to_onnx(layer)[0]
    for key in ("W", "R", "B"):
        np.testing.assert_array_equal(back[key], w[key])
    if cell == "gru":
        assert back["linear_before_reset"] == lbr


@pytest.mark.parametrize("cell,options", [("lstm", {"num_layers": 2, "bidirectional": True}),
                                          ("gru", {"reset_after": False, "bidirectional": True}),
                                          ("rnn", {"nonlinearity": "relu", "num_layers": 2})])
def test_onnx_round_trip_exact(cell, options):
    cls = {"lstm": lstm_np.LSTM, "gru": lstm_np.GRU, "rnn": lstm_np.RNN}[cell]
    layer = _random_biases(cls(3, 4, dtype=np.float64, **options))
    again = lstm_np.from_onnx(lstm_np.to_onnx(layer), cell)
    assert again.config() == layer.config()
    assert all(np.array_equal(again.params[k], layer.params[k]) for k in layer.params)


def test_onnx_gru_equals_torch_after_conversion():
    module = torch.nn.GRU(3, 4, bidirectional=True, dtype=torch.float64)
    weights = lstm_np.to_onnx(lstm_np.from_torch(module))
    layer = lstm_np.from_onnx(weights, "gru")
    x = np.random.default_rng(4).standard_normal((6, 2, 3))
    assert max_relative_error(layer(x)[0], module(torch.from_numpy(x))[0].detach().numpy()) <= 1e-12


def test_load_onnx_file(tmp_path):
    onnx = pytest.importorskip("onnx")   # a test extra: installed in CI, so this never skips there
    from onnx import TensorProto, helper, numpy_helper
    layer = _random_biases(lstm_np.LSTM(3, 4, bidirectional=True, dtype=np.float32))
    w = lstm_np.to_onnx(layer)[0]
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=4,
                            direction="bidirectional", name="lstm0")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 2, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w[k], k) for k in ("W", "R", "B")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    (loaded,) = lstm_np.load_onnx(path)
    assert all(np.array_equal(loaded.params[k], layer.params[k]) for k in layer.params)
    bad = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=4, direction="reverse")
    graph.node.pop()
    graph.node.append(bad)
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="direction 'reverse'"):
        lstm_np.load_onnx(path)


def test_conversion_refusals():
    with pytest.raises(ValueError, match="no projection"):
        lstm_np.to_keras(lstm_np.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="no projection"):
        lstm_np.to_onnx(lstm_np.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match=r"bias \(2, 12\)"):
        lstm_np.from_keras({"kernel": np.zeros((3, 12)), "recurrent_kernel": np.zeros((4, 12)),
                            "bias": np.zeros(12)}, "gru", reset_after=True)
