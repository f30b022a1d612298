"""A small trainer that knows nothing about LSTMs: data order, state resets, the optimizer step.

Data are sample-major arrays, as in Keras: ``x (N, T, F)`` and targets ``y (N, ...)``; batch ``k``
is rows ``[k * batch_size, (k + 1) * batch_size)`` of the (possibly shuffled) order.

- **stateless** (``stateful=False``): every batch starts from zero state; the order is shuffled
  each epoch (seeded) unless ``shuffle=False``; the last batch may be smaller.
- **stateful** (``stateful=True``): batches run in order, never shuffled; the final state of each
  batch's forward pass is stored (as a copy: no gradient crosses the boundary) and is the
  initial state of the next batch, row by row; the store is reset at the start of every epoch.
  ``N`` must be a multiple of ``batch_size``: lay the data out with
  :func:`lstm_np.data.stateful_batches` so that row ``i`` of batch ``k + 1`` continues row ``i`` of
  batch ``k``.

The model must take batch-first input (``batch_first=True`` recurrent layers) and offer
``forward(x, states) -> (out, states, tape)``, ``backward(tape, dout) -> grads`` with
``grads.dparams``, and ``params`` (e.g. :class:`lstm_np.Sequential`).
"""
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from . import _arrays, checkpoint
from .optim import clip_grad_norm
from .state import StateStore


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/Inf; the parameters are those before the bad batch."""


@dataclass
class History:
    """Per-batch losses (``batch_losses[epoch]`` is a list) and the mean loss of each epoch."""
    batch_losses: list = field(default_factory=list)
    epoch_losses: list = field(default_factory=list)
    skipped: list = field(default_factory=list)     # (epoch, batch) of non-finite batches skipped


class Trainer:
    """``Trainer(model, loss, optimizer, stateful=False, batch_size=32, shuffle=None,
    clip_norm=None, seed=None, progress=None, on_nonfinite="raise")``.

    ``loss(out, y) -> (value, dout)`` (see :mod:`lstm_np.losses`); ``optimizer.step(dparams)``.
    ``shuffle`` defaults to ``not stateful``; stateful training refuses ``shuffle=True``.
    ``progress``: a tqdm bar when tqdm is installed and stderr is a terminal (``None``), always
    (``True``) or never (``False``). ``on_nonfinite``: ``"raise"`` stops with
    :class:`NonFiniteError` naming epoch and batch, ``"skip"`` drops that batch's update.
    """

    def __init__(self, model, loss, optimizer, stateful=False, batch_size=32, shuffle=None,
                 clip_norm=None, seed=None, progress=None, on_nonfinite="raise"):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.stateful = bool(stateful)
        self.batch_size = _arrays.positive_int(batch_size, "batch_size")
        if shuffle and self.stateful:
            raise ValueError("shuffle: stateful training never shuffles (row i of batch k+1 must "
                             "continue row i of batch k); use shuffle=False or stateful=False")
        self.shuffle = (not self.stateful) if shuffle is None else bool(shuffle)
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm: expected a positive number or None, got {clip_norm!r}")
        self.clip_norm = clip_norm
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite: expected 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.progress = progress
        if not getattr(model, "batch_first", True):
            raise ValueError("Trainer: expected a model with batch_first=True recurrent layers "
                             "(the trainer feeds (B, T, F) batches)")
        self.rng = np.random.default_rng(seed)
        self.store = StateStore(model, self.batch_size) if self.stateful else None
        self.epoch = 0          # epochs completed
        self.batch = 0          # batches completed in the current epoch
        self.order = None       # the current epoch's sample order
        self.history = History()

    # ----------------------------------------------------------------- data
    def _check_data(self, x, y):
        x = _arrays.to_numpy(x, "x")
        y = _arrays.to_numpy(y, "y")
        if x.ndim != 3:
            raise ValueError(f"x: expected (N, T, F) sample-major sequences, got shape {x.shape}")
        if y.shape[:1] != x.shape[:1]:
            raise ValueError(f"y: expected {x.shape[0]} rows like x, got shape {y.shape}")
        for name, arr in (("x", x), ("y", y)):
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"{name}: expected numbers, got dtype {arr.dtype}")
            if arr.dtype.kind == "f" and not _arrays.all_finite(arr):
                raise ValueError(f"{name}: expected finite values, got NaN/Inf entries")
        if self.stateful and x.shape[0] % self.batch_size:
            raise ValueError(
                f"x: stateful training needs N to be a multiple of batch_size={self.batch_size} "
                f"(every batch continues the previous one row by row), got N={x.shape[0]}; lay "
                f"the data out with lstm_np.data.stateful_batches(..., remainder='drop')")
        return x, y

    def _batches(self, n):
        return [(k * self.batch_size, min(n, (k + 1) * self.batch_size))
                for k in range(math.ceil(n / self.batch_size))]

    # ----------------------------------------------------------------- training
    def fit(self, x, y, epochs=1, max_batches=None):
        """Train until ``epochs`` epochs are complete (counting those already done, so a loaded
        checkpoint continues to the same end). ``max_batches`` stops early after that many
        batches in this call (the position is kept; call ``fit`` again to continue).
        Returns :attr:`history`."""
        x, y = self._check_data(x, y)
        n = x.shape[0]
        spans = self._batches(n)
        done = 0
        bar = self._progress_bar(total=max(0, epochs - self.epoch) * len(spans) - self.batch)
        try:
            while self.epoch < epochs:
                if self.batch == 0:
                    self._start_epoch(n)
                while self.batch < len(spans):
                    if max_batches is not None and done >= max_batches:
                        return self.history
                    lo, hi = spans[self.batch]
                    idx = self.order[lo:hi]
                    value = self._train_batch(x[idx], y[idx])
                    self.history.batch_losses[self.epoch].append(value)
                    self.batch += 1
                    done += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(epoch=self.epoch + 1, loss=f"{value:.4g}")
                losses = [v for v in self.history.batch_losses[self.epoch] if v is not None]
                self.history.epoch_losses.append(float(np.mean(losses)) if losses else math.nan)
                self.epoch += 1
                self.batch = 0
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def _start_epoch(self, n):
        self.order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        if self.store is not None:
            self.store.reset()
        self.history.batch_losses.append([])

    def _train_batch(self, xb, yb):
        states = None
        if self.store is not None:
            self.store.check_batch(xb.shape[0])
            states = self.store.read()
        out, final_states, tape = self.model.forward(xb, states)
        value, dout = self.loss(out, yb)
        finite = math.isfinite(value) and _arrays.all_finite(dout)
        if finite:
            grads = self.model.backward(tape, dout).dparams
            finite = all(_arrays.all_finite(g) for g in grads.values())
        if not finite:
            where = f"epoch {self.epoch + 1}, batch {self.batch + 1}"
            if self.on_nonfinite == "raise":
                raise NonFiniteError(f"non-finite loss or gradient at {where} (loss {value}); "
                                     "the parameters are those before this batch")
            self.history.skipped.append((self.epoch, self.batch))
        else:
            if self.clip_norm is not None:
                clip_grad_norm(grads, self.clip_norm)
            self.optimizer.step(grads)
        if self.store is not None:
            self.store.write(final_states)       # a copy: the gradient stops here
        return value if finite else None

    def _progress_bar(self, total):
        if self.progress is False or total <= 0:
            return None
        if self.progress is None and not sys.stderr.isatty():
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, unit="batch", leave=False)

    # ----------------------------------------------------------------- inference
    def predict(self, x, batch_size=None, warmup=None):
        """Model outputs for ``x (N, T, F)``, in order, using a store of its own (the training
        state is never touched). Stateful: state carries from batch to batch as in training
        (``N`` a multiple of ``batch_size``); ``warmup`` (same layout) is run first to seed it.
        ``batch_size`` defaults to the trainer's; for a stateful model a different batch size is
        simply a new store for the same model."""
        size = (self.batch_size if batch_size is None
                else _arrays.positive_int(batch_size, "batch_size"))
        store = StateStore(self.model, size) if self.stateful else None
        if warmup is not None:
            self._run(_arrays.to_numpy(warmup, "warmup"), size, store)
        return self._run(_arrays.to_numpy(x, "x"), size, store)

    def evaluate(self, x, y, batch_size=None, warmup=None):
        """The loss of :meth:`predict`'s outputs against ``y``."""
        out = self.predict(x, batch_size, warmup)
        return self.loss(out, _arrays.to_numpy(y, "y").astype(out.dtype, copy=False))[0]

    def _run(self, x, size, store):
        if x.ndim != 3:
            raise ValueError(f"x: expected (N, T, F) sample-major sequences, got shape {x.shape}")
        if store is not None and x.shape[0] % size:
            store.check_batch(x.shape[0] % size)
        outs = []
        for lo in range(0, x.shape[0], size):
            states = store.read() if store is not None else None
            out, final = self.model(x[lo:lo + size], states)
            if store is not None:
                store.write(final)
            outs.append(out)
        return np.concatenate(outs)

    # ----------------------------------------------------------------- checkpoints
    def save(self, path):
        """Model, optimizer moments, state store, RNGs and position, in one ``.npz``, written
        atomically. See :mod:`lstm_np.checkpoint`."""
        checkpoint.save(self, path)

    def load(self, path):
        """Restore everything :meth:`save` wrote; a bad file raises
        :class:`~lstm_np.errors.FileFormatError` and changes nothing."""
        checkpoint.load(self, path)
