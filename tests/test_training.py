"""The trainer against a torch reference loop written here: nn.LSTM/GRU/RNN + nn.Linear,
torch.optim.SGD/Adam, hidden state detached between batches and zeroed at each epoch start."""
import numpy as np
import pytest
import torch

import lstm_np
from lstm_np.data import stateful_batches

pytestmark = pytest.mark.usefixtures("kernel_path")

CELLS = {"lstm": (lstm_np.LSTM, torch.nn.LSTM), "gru": (lstm_np.GRU, torch.nn.GRU),
         "rnn": (lstm_np.RNN, torch.nn.RNN)}


def build(cell, num_layers, features=2, hidden=5, seed=0):
    ours_cls, torch_cls = CELLS[cell]
    rnn = ours_cls(features, hidden, num_layers=num_layers, batch_first=True,
                   dtype=np.float64, seed=seed)
    head = lstm_np.Linear(hidden, features, dtype=np.float64, seed=seed + 1)
    model = lstm_np.Sequential([rnn, head])
    t_rnn = torch_cls(features, hidden, num_layers=num_layers, batch_first=True,
                      dtype=torch.float64)
    t_head = torch.nn.Linear(hidden, features, dtype=torch.float64)
    t_model = torch.nn.ModuleDict({"rnn": t_rnn, "head": t_head})
    t_rnn.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in rnn.params.items()})
    t_head.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in head.params.items()})
    return model, t_model


def make_optimizers(kind, model, t_model):
    if kind == "sgd":
        return (lstm_np.SGD(model.params, lr=0.05, momentum=0.9, weight_decay=1e-3),
                torch.optim.SGD(t_model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3))
    return (lstm_np.Adam(model.params, lr=0.01, weight_decay=1e-4),
            torch.optim.Adam(t_model.parameters(), lr=0.01, weight_decay=1e-4))


def torch_reference(t_model, t_opt, x, y, epochs, batch_size, stateful, seed, clip_norm=None):
    rng = np.random.default_rng(seed)
    losses = []
    n = x.shape[0]
    for _ in range(epochs):
        order = np.arange(n) if stateful else rng.permutation(n)
        state = None                                    # zero state at every epoch start
        for lo in range(0, n, batch_size):
            idx = order[lo:lo + batch_size]
            xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])
            out, final = t_model["rnn"](xb, state if stateful else None)
            loss = torch.nn.functional.mse_loss(t_model["head"](out), yb)
            t_opt.zero_grad()
            loss.backward()
            if clip_norm:
                torch.nn.utils.clip_grad_norm_(t_model.parameters(), clip_norm)
            t_opt.step()
            if stateful:                                # detach: truncated BPTT
                state = tuple(s.detach() for s in final) if isinstance(final, tuple) \
                    else final.detach()
            losses.append(loss.item())
    return losses


def series(n=161, seed=0):
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return np.stack([np.sin(0.3 * t), np.cos(0.11 * t)], axis=1) + 0.1 * rng.standard_normal((n, 2))


@pytest.mark.parametrize("stateful", [True, False], ids=["stateful", "stateless"])
@pytest.mark.parametrize("cell,num_layers,opt", [("lstm", 2, "sgd"), ("lstm", 1, "adam"),
                                                 ("gru", 2, "adam"), ("rnn", 2, "sgd")])
def test_trainer_equals_torch_loop(cell, num_layers, opt, stateful):
    x, y = stateful_batches(series(), batch_size=4, seq_len=8, dtype=np.float64)
    assert x.shape[0] // 4 >= 5                      # at least 5 batches per epoch
    model, t_model = build(cell, num_layers)
    optimizer, t_opt = make_optimizers(opt, model, t_model)
    trainer = lstm_np.Trainer(model, lstm_np.mse, optimizer, stateful=stateful, batch_size=4,
                              seed=3, clip_norm=1.0, progress=False)
    history = trainer.fit(x, y, epochs=2)
    ref = torch_reference(t_model, t_opt, x, y, 2, 4, stateful, seed=3, clip_norm=1.0)
    ours = [v for epoch in history.batch_losses for v in epoch]
    assert len(ours) == len(ref) == 2 * x.shape[0] // 4
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=0)
    t_params = {**{f"0.{k}": v for k, v in t_model["rnn"].state_dict().items()},
                **{f"1.{k}": v for k, v in t_model["head"].state_dict().items()}}
    for name, value in model.params.items():
        np.testing.assert_allclose(value, t_params[name].numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    assert history.epoch_losses[1] < history.epoch_losses[0]   # it learns


def test_stateful_and_stateless_differ():
    """The carried state matters: the two modes give different losses on the same data."""
    x, y = stateful_batches(series(), batch_size=4, seq_len=8, dtype=np.float64)
    results = []
    for stateful in (True, False):
        model, _ = build("lstm", 1)
        trainer = lstm_np.Trainer(model, lstm_np.mse, lstm_np.SGD(model.params, lr=0.05),
                                  stateful=stateful, shuffle=False, batch_size=4, progress=False)
        results.append(trainer.fit(x, y, epochs=1).batch_losses[0])
    assert results[0][0] == results[1][0]            # the first batch starts from zeros in both
    assert not np.allclose(results[0][1:], results[1][1:], rtol=1e-6)


def test_optimizers_step_for_step():
    rng = np.random.default_rng(0)
    for kind in ("sgd", "adam"):
        p = {"w": rng.standard_normal((3, 4))}
        tp = torch.nn.Parameter(torch.from_numpy(p["w"].copy()))
        if kind == "sgd":
            ours = lstm_np.SGD(p, lr=0.1, momentum=0.8, dampening=0.1, weight_decay=0.01)
            theirs = torch.optim.SGD([tp], lr=0.1, momentum=0.8, dampening=0.1, weight_decay=0.01)
        else:
            ours = lstm_np.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
            theirs = torch.optim.Adam([tp], lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
        for _ in range(7):
            g = rng.standard_normal((3, 4))
            ours.step({"w": g})
            tp.grad = torch.from_numpy(g.copy())
            theirs.step()
            np.testing.assert_allclose(p["w"], tp.detach().numpy(), rtol=1e-13, atol=1e-15)
    nesterov = lstm_np.SGD({"w": np.zeros(2)}, lr=0.1, momentum=0.9, nesterov=True)
    assert nesterov.nesterov


def test_clip_grad_norm_equals_torch():
    rng = np.random.default_rng(1)
    grads = {"a": rng.standard_normal((3, 3)), "b": rng.standard_normal(5)}
    params = [torch.nn.Parameter(torch.zeros(3, 3, dtype=torch.float64)),
              torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))]
    params[0].grad = torch.from_numpy(grads["a"].copy())
    params[1].grad = torch.from_numpy(grads["b"].copy())
    ref_norm = torch.nn.utils.clip_grad_norm_(params, 0.5).item()
    norm = lstm_np.clip_grad_norm(grads, 0.5)
    assert norm == pytest.approx(ref_norm, rel=1e-14)
    np.testing.assert_allclose(grads["a"], params[0].grad.numpy(), rtol=1e-14)


def test_losses_equal_torch():
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    value, grad = lstm_np.mse(pred, target)
    tp = torch.from_numpy(pred).requires_grad_(True)
    ref = torch.nn.functional.mse_loss(tp, torch.from_numpy(target))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-14)
    np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-14)

    logits = rng.standard_normal((6, 5)) * 30 + np.array([1000.0, 0, 0, 0, -1000.0])
    labels = rng.integers(0, 5, 6)
    value, grad = lstm_np.cross_entropy(logits, labels)
    tl = torch.from_numpy(logits).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(tl, torch.from_numpy(labels))
    ref.backward()
    assert np.isfinite(value) and value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, tl.grad.numpy(), rtol=1e-10, atol=1e-15)
    with pytest.raises(ValueError, match=r"expected classes in \[0, 4\]"):
        lstm_np.cross_entropy(logits, labels + 5)


def test_sequential_gradients_equal_torch():
    model, t_model = build("gru", 2)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 2))
    out, states, tape = model.forward(x)
    dout = rng.standard_normal(out.shape)
    grads = model.backward(tape, dout)
    xt = torch.from_numpy(x).requires_grad_(True)
    t_out = t_model["head"](t_model["rnn"](xt)[0])
    (t_out * torch.from_numpy(dout)).sum().backward()
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads.dx, xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert list(grads.dparams) == list(model.params)
    np.testing.assert_allclose(grads.dparams["0.weight_hh_l1"],
                               t_model["rnn"].weight_hh_l1.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads.dparams["1.weight"], t_model["head"].weight.grad.numpy(),
                               rtol=1e-10, atol=1e-14)
