"""The slow, obvious reference: one sequence, one step, one equation at a time, in float64.

Nothing here is shared with the library but the parameter names. Forward covers every option
(layers, directions, lengths, projection, both GRU forms, both RNN nonlinearities); backward is
the textbook BPTT of one layer and one direction, written out step by step.
"""
import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _cell_step(kind, w, x, h, c, opts):
    """One step of one sequence: returns (h_new, c_new)."""
    b_ih = w.get("bias_ih", 0.0)
    b_hh = w.get("bias_hh", 0.0)
    if kind == "lstm":
        a = w["weight_ih"] @ x + b_ih + w["weight_hh"] @ h + b_hh
        i, f, g, o = np.split(a, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        if "weight_hr" in w:
            h = w["weight_hr"] @ h
        return h, c
    if kind == "gru":
        H = h.shape[0]
        W_ir, W_iz, W_in = np.split(w["weight_ih"], 3)
        W_hr, W_hz, W_hn = np.split(w["weight_hh"], 3)
        b_ir, b_iz, b_in = np.split(np.broadcast_to(b_ih, 3 * H), 3)
        b_hr, b_hz, b_hn = np.split(np.broadcast_to(b_hh, 3 * H), 3)
        r = sigmoid(W_ir @ x + b_ir + W_hr @ h + b_hr)
        z = sigmoid(W_iz @ x + b_iz + W_hz @ h + b_hz)
        if opts.get("reset_after", True):
            n = np.tanh(W_in @ x + b_in + r * (W_hn @ h + b_hn))
        else:
            n = np.tanh(W_in @ x + b_in + W_hn @ (r * h) + b_hn)
        return (1 - z) * n + z * h, None
    a = w["weight_ih"] @ x + b_ih + w["weight_hh"] @ h + b_hh
    return (np.maximum(a, 0.0) if opts.get("nonlinearity") == "relu" else np.tanh(a)), None


def forward(kind, params, x, h0, c0=None, lengths=None, num_layers=1, bidirectional=False,
            **opts):
    """``x (T, B, I)`` time-major; ``h0``/``c0`` ``(L*D, B, .)``. Returns ``y, h_n, c_n``."""
    T, B, _ = x.shape
    D = 2 if bidirectional else 1
    lengths = [T] * B if lengths is None else list(lengths)
    h_n = np.zeros_like(h0, dtype=np.float64)
    c_n = None if c0 is None else np.zeros_like(c0, dtype=np.float64)
    inp = np.asarray(x, dtype=np.float64)
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = {k[:-len(sfx)]: np.asarray(v, np.float64) for k, v in params.items()
                 if k.endswith(sfx)}
            row = layer * D + d
            out = np.zeros((T, B, h0.shape[-1]))
            for b in range(B):
                h = np.array(h0[row, b], dtype=np.float64)
                c = None if c0 is None else np.array(c0[row, b], dtype=np.float64)
                order = range(lengths[b]) if d == 0 else reversed(range(lengths[b]))
                for t in order:
                    h, c = _cell_step(kind, w, inp[t, b], h, c, opts)
                    out[t, b] = h
                h_n[row, b] = h
                if c_n is not None:
                    c_n[row, b] = c
            outs.append(out)
        inp = np.concatenate(outs, axis=2)
    return inp, h_n, c_n


def lstm_backward(params, x, h0, c0, dy, dh_n, dc_n):
    """Textbook BPTT of a one-layer, one-direction LSTM without projection (float64).

    Returns ``(dx, dh0, dc0, dparams)``.
    """
    W_ih, W_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    bias = params["bias_ih_l0"] + params["bias_hh_l0"]
    T, B, _ = x.shape
    H = W_hh.shape[1]
    hs, cs, cache = [h0[0]], [c0[0]], []
    for t in range(T):
        a = x[t] @ W_ih.T + hs[-1] @ W_hh.T + bias
        i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), \
            sigmoid(a[:, 3 * H:])
        c = f * cs[-1] + i * g
        cs.append(c)
        hs.append(o * np.tanh(c))
        cache.append((i, f, g, o))
    dW_ih, dW_hh, db = np.zeros_like(W_ih), np.zeros_like(W_hh), np.zeros(4 * H)
    dx = np.zeros_like(x)
    dh_next, dc_next = dh_n[0].copy(), dc_n[0].copy()
    for t in reversed(range(T)):
        i, f, g, o = cache[t]
        dh = dy[t] + dh_next
        tc = np.tanh(cs[t + 1])
        dc = dc_next + dh * o * (1 - tc ** 2)
        da = np.concatenate([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f),
                             dc * i * (1 - g ** 2), dh * tc * o * (1 - o)], axis=1)
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ hs[t]
        db += da.sum(0)
        dx[t] = da @ W_ih
        dh_next = da @ W_hh
        dc_next = dc * f
    dparams = {"weight_ih_l0": dW_ih, "weight_hh_l0": dW_hh, "bias_ih_l0": db, "bias_hh_l0": db}
    return dx, dh_next[None], dc_next[None], dparams


def gru_backward(params, x, h0, dy, dh_n, reset_after=True):
    """Textbook BPTT of a one-layer, one-direction GRU, either form (float64).

    Returns ``(dx, dh0, dparams)``.
    """
    W_ih, W_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    b_ih, b_hh = params["bias_ih_l0"], params["bias_hh_l0"]
    T, B, _ = x.shape
    H = W_hh.shape[1]
    W_hr, W_hz, W_hn = W_hh[:H], W_hh[H:2 * H], W_hh[2 * H:]
    hs, cache = [h0[0]], []
    for t in range(T):
        h = hs[-1]
        xw = x[t] @ W_ih.T + b_ih
        r = sigmoid(xw[:, :H] + h @ W_hr.T + b_hh[:H])
        z = sigmoid(xw[:, H:2 * H] + h @ W_hz.T + b_hh[H:2 * H])
        if reset_after:
            hn = h @ W_hn.T + b_hh[2 * H:]
            n = np.tanh(xw[:, 2 * H:] + r * hn)
        else:
            hn = r * h
            n = np.tanh(xw[:, 2 * H:] + hn @ W_hn.T + b_hh[2 * H:])
        hs.append((1 - z) * n + z * h)
        cache.append((r, z, n, hn))
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dx = np.zeros_like(x)
    dh_next = dh_n[0].copy()
    for t in reversed(range(T)):
        r, z, n, hn = cache[t]
        h = hs[t]
        dh = dy[t] + dh_next
        dn_pre = dh * (1 - z) * (1 - n ** 2)
        dz_pre = dh * (h - n) * z * (1 - z)
        dh_prev = dh * z
        if reset_after:
            dhn = dn_pre * r
            dr_pre = dn_pre * hn * r * (1 - r)
            grads["weight_hh_l0"][2 * H:] += dhn.T @ h
            dh_prev += dhn @ W_hn
        else:
            drh = dn_pre @ W_hn
            dr_pre = drh * h * r * (1 - r)
            dhn = dn_pre
            grads["weight_hh_l0"][2 * H:] += dn_pre.T @ hn
            dh_prev += drh * r
        grads["weight_hh_l0"][:H] += dr_pre.T @ h
        grads["weight_hh_l0"][H:2 * H] += dz_pre.T @ h
        dh_prev += dr_pre @ W_hr + dz_pre @ W_hz
        dxw = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
        grads["weight_ih_l0"] += dxw.T @ x[t]
        grads["bias_ih_l0"] += dxw.sum(0)
        grads["bias_hh_l0"] += np.concatenate([dr_pre, dz_pre, dhn], axis=1).sum(0)
        dx[t] = dxw @ W_ih
        dh_next = dh_prev
    return dx, dh_next[None], grads


def rnn_backward(params, x, h0, dy, dh_n, nonlinearity="tanh"):
    """Textbook BPTT of a one-layer, one-direction RNN (float64): ``(dx, dh0, dparams)``."""
    W_ih, W_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    bias = params["bias_ih_l0"] + params["bias_hh_l0"]
    T = x.shape[0]
    hs = [h0[0]]
    for t in range(T):
        a = x[t] @ W_ih.T + hs[-1] @ W_hh.T + bias
        hs.append(np.maximum(a, 0) if nonlinearity == "relu" else np.tanh(a))
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    dx = np.zeros_like(x)
    dh_next = dh_n[0].copy()
    for t in reversed(range(T)):
        dh = dy[t] + dh_next
        da = dh * (hs[t + 1] > 0) if nonlinearity == "relu" else dh * (1 - hs[t + 1] ** 2)
        grads["weight_ih_l0"] += da.T @ x[t]
        grads["weight_hh_l0"] += da.T @ hs[t]
        grads["bias_ih_l0"] += da.sum(0)
        grads["bias_hh_l0"] += da.sum(0)
        dx[t] = da @ W_ih
        dh_next = da @ W_hh
    return dx, dh_next[None], grads
