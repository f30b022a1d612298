"""The state store: what a stateful model carries from one batch to the next.

Row ``i`` of every state array is batch position ``i``: the final state of sample ``i`` of batch
``k`` is the initial state of sample ``i`` of batch ``k + 1``. Reading returns copies and writing
stores copies, so a tape never aliases the store and no gradient crosses a batch boundary
(truncated BPTT). Shapes: each recurrent layer's state is ``h`` or ``(h, c)``, each
``(L*D, B, .)`` as in torch.
"""
import numpy as np

from . import _arrays
from .recurrent import Recurrent


def recurrent_layers(model):
    """The recurrent layers of ``model`` (a recurrent layer itself, or a model with a
    ``recurrent_layers()`` method such as :class:`~lstm_np.Sequential`), in order."""
    if isinstance(model, Recurrent):
        return [model]
    if hasattr(model, "recurrent_layers"):
        return model.recurrent_layers()
    raise TypeError(f"expected a recurrent layer or a Sequential, got "
                    f"{type(model).__name__}")


class StateStore:
    """Carried state of every recurrent layer of ``model`` for a fixed ``batch_size``.

    - ``read()``: list (one per recurrent layer) of state copies; pass it as ``states``.
    - ``write(states)``: store copies of the final states of a forward pass.
    - ``reset()`` zeroes every row; ``reset(slots)`` zeroes only those rows (indices or a boolean
      mask), e.g. when stream ``i`` starts a new, unrelated sequence.
    - ``check_batch(n)``: the error to raise when a batch of the wrong size comes.

    A different batch size (say 1, for prediction after training with 32) is a new store for the
    same model: ``StateStore(model, 1)``; the model itself does not change.
    """

    def __init__(self, model, batch_size):
        self.batch_size = _arrays.positive_int(batch_size, "batch_size")
        self._layers = recurrent_layers(model)
        self._states = [tuple(np.zeros((layer.num_layers * layer.num_directions,
                                        self.batch_size, n), layer.dtype)
                              for n in layer.state_sizes()) for layer in self._layers]

    def check_batch(self, n):
        """Raise a ``ValueError`` saying why, when a batch of ``n`` rows cannot use this store."""
        if n != self.batch_size:
            raise ValueError(
                f"StateStore: this store carries state for batch_size={self.batch_size} (row i "
                f"is stream i), got a batch of {n} rows. In stateful training every batch must "
                f"have the same size: lay the data out with stateful_batches(..., "
                f"remainder='drop'). For inference with {n} rows, use a new store for the same "
                f"model: StateStore(model, batch_size={n}).")

    def read(self):
        """Copies of the carried states, one entry per recurrent layer (``h`` or ``(h, c)``)."""
        return [self._pack(tuple(p.copy() for p in parts)) for parts in self._states]

    def write(self, states):
        """Store copies of ``states`` (one entry per recurrent layer). Checked in full first."""
        if len(states) != len(self._states):
            raise ValueError(f"StateStore.write: expected {len(self._states)} states (one per "
                             f"recurrent layer), got {len(states)}")
        staged = []
        for k, (layer, state) in enumerate(zip(self._layers, states)):
            parts = layer._check_state(state, self.batch_size, unbatched=False,
                                       what=f"state of recurrent layer {k}")
            staged.append(tuple(np.array(p, copy=True) for p in parts))
        self._states = staged

    def reset(self, slots=None):
        """Zero the state of every row, or of the rows ``slots`` only."""
        rows = slice(None) if slots is None else _arrays.slot_index(slots, self.batch_size)
        for parts in self._states:
            for p in parts:
                p[:, rows] = 0.0

    def arrays(self):
        """The stored arrays by name (``"0/h"``, ``"0/c"``, ...), copies, for checkpoints."""
        return {f"{k}/{name}": p.copy() for k, (layer, parts) in
                enumerate(zip(self._layers, self._states))
                for name, p in zip(layer.state_names, parts)}

    def load_arrays(self, arrays):
        """Inverse of :meth:`arrays`; every array is checked before any is stored."""
        states = [tuple(arrays[f"{k}/{name}"] for name in layer.state_names)
                  for k, layer in enumerate(self._layers)]
        self.write([self._pack(s) for s in states])

    @staticmethod
    def _pack(parts):
        return parts if len(parts) > 1 else parts[0]
