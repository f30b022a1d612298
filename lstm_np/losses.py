"""Losses that return their value and their gradient together: ``value, grad = loss(pred, target)``.

Both reduce by the mean, as torch's default ``reduction="mean"``.
"""
import numpy as np

from . import _arrays


def mse(pred, target):
    """Mean squared error over every entry: ``mean((pred - target)^2)``.

    ``pred`` and ``target``: same shape. Returns ``(value, dL/dpred)`` with
    ``dL/dpred = 2 (pred - target) / pred.size``.
    """
    pred = np.asarray(pred)
    target = _arrays.float_array(target, "target", pred.dtype, shape=pred.shape)
    diff = pred - target
    return float(np.mean(diff * diff, dtype=np.float64)), (2.0 / diff.size) * diff


def cross_entropy(logits, labels):
    """Softmax cross-entropy from logits, averaged over samples (torch's ``cross_entropy``).

    ``logits (..., C)``, ``labels (...)`` integer classes in ``[0, C)``. The log-softmax
    subtracts the row maximum first, so large logits neither overflow nor lose the answer.
    Returns ``(value, dL/dlogits)`` with ``dL/dlogits = (softmax - onehot) / n_samples``.
    """
    logits = np.asarray(logits)
    labels = _arrays.to_numpy(labels, "labels")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels: expected shape {logits.shape[:-1]} (logits without the class "
                         f"axis), got {labels.shape}")
    C = logits.shape[-1]
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"labels: expected classes in [0, {C - 1}], got min {labels.min()} "
                         f"and max {labels.max()}")
    flat = logits.reshape(-1, C)
    shifted = flat - flat.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    idx = labels.reshape(-1)
    n = idx.size
    value = float(-log_probs[np.arange(n), idx].mean(dtype=np.float64))
    grad = np.exp(log_probs)
    grad[np.arange(n), idx] -= 1.0
    grad /= n
    return value, grad.reshape(logits.shape).astype(logits.dtype, copy=False)
