"""The gradient lab against a hand computation, torch (retain_grad) and finite differences."""
import numpy as np
import pytest
import torch

import lstm_np
from lstm_np import gradients


def test_gradient_flow_by_hand_on_a_one_unit_rnn():
    """h_t = tanh(w x_t + u h_{t-1} + b): dL/dh_{t-1} = dL/dh_t * (1 - h_t^2) * u."""
    layer = lstm_np.RNN(1, 1, dtype=np.float64)
    w, u, b1, b2 = 0.7, -1.3, 0.2, -0.05
    layer.load_state_dict({"weight_ih_l0": [[w]], "weight_hh_l0": [[u]],
                           "bias_ih_l0": [b1], "bias_hh_l0": [b2]})
    x = np.array([0.5, -1.0, 2.0, 0.3])[:, None, None]
    flow = gradients.gradient_flow(layer, x)
    r = flow.loss_direction[0]
    h, hs = 0.0, []
    for xt in x[:, 0, 0]:
        h = np.tanh(w * xt + u * h + b1 + b2)
        hs.append(h)
    expected = [abs(r)]
    for t in range(3, 0, -1):
        expected.append(expected[-1] * abs((1 - hs[t] ** 2) * u))
    np.testing.assert_allclose(flow.dh_norms[0], expected[::-1], rtol=1e-13)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_gradient_flow_equals_torch_retain_grad(num_layers):
    """torch LSTMCells stepped by hand: each (h, c) is both the output and the carried state,
    so ``retain_grad`` on it gives the total gradient reaching it."""
    layer = lstm_np.LSTM(3, 4, num_layers=num_layers, dtype=np.float64, seed=1)
    cells = []
    for k in range(num_layers):
        cell = torch.nn.LSTMCell(3 if k == 0 else 4, 4, dtype=torch.float64)
        cell.load_state_dict({name.replace(f"_l{k}", ""): torch.from_numpy(v)
                              for name, v in layer.params.items() if name.endswith(f"_l{k}")})
        cells.append(cell)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    flow = gradients.gradient_flow(layer, x, seed=5)
    states = [(torch.zeros(2, 4, dtype=torch.float64),) * 2 for _ in cells]
    kept = [[] for _ in cells]
    for t in range(6):
        inp = torch.from_numpy(x[t])
        for k, cell in enumerate(cells):
            h, c = cell(inp, states[k])
            h.retain_grad()
            c.retain_grad()
            states[k] = (h, c)
            kept[k].append((h, c))
            inp = h
    (inp * torch.from_numpy(flow.loss_direction)).sum().backward()
    for k in range(num_layers):
        dh = [np.linalg.norm(h.grad.numpy(), axis=-1).mean() for h, _ in kept[k]]
        dc = [np.linalg.norm(c.grad.numpy(), axis=-1).mean() if c.grad is not None else 0.0
              for _, c in kept[k]]
        np.testing.assert_allclose(flow.dh_norms[k], dh, rtol=1e-10)
        np.testing.assert_allclose(flow.dc_norms[k], dc, rtol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_jacobian_norms_against_finite_differences(cell):
    """d h_T / d h_t by perturbing the state at t and re-running the rest of the sequence."""
    cls = {"lstm": lstm_np.LSTM, "gru": lstm_np.GRU, "rnn": lstm_np.RNN}[cell]
    layer = cls(2, 3, dtype=np.float64, seed=2)
    x = np.random.default_rng(1).standard_normal((7, 1, 2))
    norms = gradients.jacobian_norms(layer, x)
    assert norms.shape == (1, 7)
    eps = 1e-6
    for t in (1, 4, 6):
        _, state_t = layer(x[:t + 1])                   # state after step t
        parts = list(state_t) if isinstance(state_t, tuple) else [state_t]
        jac = np.empty((3, 3))
        for k in range(3):
            cols = []
            for sign in (1, -1):
                p = [q.copy() for q in parts]
                p[0][0, 0, k] += sign * eps
                s = tuple(p) if len(p) > 1 else p[0]
                h_T = layer(x[t + 1:], s)[1] if t < 6 else s
                cols.append((h_T[0] if isinstance(h_T, tuple) else h_T)[0, 0])
            jac[:, k] = (cols[0] - cols[1]) / (2 * eps)
        assert norms[0, t] == pytest.approx(np.linalg.norm(jac, 2), rel=1e-6)


def test_gate_saturation_counts():
    layer = lstm_np.LSTM(1, 2, dtype=np.float64)
    layer.load_state_dict({k: np.zeros_like(v) for k, v in layer.params.items()})
    layer.params["bias_ih_l0"][:2] = 10.0     # input gate saturated high
    layer.params["bias_ih_l0"][2:4] = -10.0   # forget gate saturated low
    _, _, tape = layer.forward(np.zeros((5, 3, 1)), lengths=np.array([5, 2, 1]))
    stats = gradients.gate_saturation(layer, tape)[0]
    assert stats["i"] == (0.0, 1.0) and stats["f"] == (1.0, 0.0) and stats["o"] == (0.0, 0.0)
    assert stats["g"] == (1.0, 0.0)            # tanh(0) = 0, reported as |g| < 0.05
