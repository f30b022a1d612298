"""Run the same layer in torch (float64 or float32, CPU) from an lstm_np layer's weights.

Only the tests import torch; the library never does.
"""
import numpy as np
import torch

import lstm_np

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def torch_module(layer):
    """A torch.nn.LSTM/GRU/RNN with ``layer``'s configuration and a copy of its parameters."""
    common = dict(input_size=layer.input_size, hidden_size=layer.hidden_size,
                  num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
                  dropout=0.0, bidirectional=layer.bidirectional,
                  dtype=TORCH_DTYPE[layer.dtype])
    if isinstance(layer, lstm_np.LSTM):
        module = torch.nn.LSTM(proj_size=layer.proj_size, **common)
    elif isinstance(layer, lstm_np.GRU):
        assert layer.reset_after, "torch has only the reset_after=True GRU"
        module = torch.nn.GRU(**common)
    else:
        module = torch.nn.RNN(nonlinearity=layer.nonlinearity, **common)
    assert list(module.state_dict()) == list(layer.params), "parameter keys or order differ"
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.params.items()})
    return module


def run_torch(module, x, state, dy, dstate, lengths=None):
    """Forward and backward of ``L = sum(y * dy) + sum(state_n * dstate)`` in torch.

    Returns ``(y, state_n, grads)`` as numpy, ``grads`` with keys ``x``, ``h0`` (``c0``) and
    every parameter name. ``lengths`` runs through ``pack_padded_sequence`` and the output is
    padded back to the full ``T`` with zeros.
    """
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    is_lstm = isinstance(module, torch.nn.LSTM)
    parts = list(state) if is_lstm else [state]
    st = [torch.from_numpy(s.copy()).requires_grad_(True) for s in parts]
    hx = tuple(st) if is_lstm else st[0]
    module.zero_grad()
    if lengths is None:
        y, sn = module(xt, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            xt, torch.as_tensor(lengths), batch_first=module.batch_first, enforce_sorted=False)
        yp, sn = module(packed, hx)
        total = x.shape[1] if module.batch_first else x.shape[0]
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=module.batch_first,
                                                      total_length=total)
    sn_parts = list(sn) if is_lstm else [sn]
    dparts = list(dstate) if is_lstm else [dstate]
    loss = (y * torch.from_numpy(dy)).sum()
    for s, d in zip(sn_parts, dparts):
        loss = loss + (s * torch.from_numpy(d)).sum()
    loss.backward()
    grads = {"x": xt.grad.numpy()}
    names = ("h0", "c0") if is_lstm else ("h0",)
    for name, s in zip(names, st):
        grads[name] = s.grad.numpy()
    for name, p in module.named_parameters():
        grads[name] = p.grad.numpy()
    y_np = y.detach().numpy()
    state_np = tuple(s.detach().numpy() for s in sn_parts)
    return y_np, state_np if is_lstm else state_np[0], grads
