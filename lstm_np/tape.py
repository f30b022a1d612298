"""What a recurrent layer keeps for BPTT (:class:`Tape`) and what its backward returns
(:class:`Gradients`). Both are plain containers of numpy arrays, meant to be looked at."""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tape:
    """Everything ``backward`` needs, recorded by ``layer.forward``.

    Shapes (time-major whatever ``batch_first`` is): ``T`` steps, ``B`` batch, ``H`` hidden,
    ``P`` hidden output (``proj_size`` or ``H``), ``D`` directions, ``L`` layers.

    - ``inputs[l]``: the input of layer ``l``, ``(T, B, I_l)`` (after dropout for ``l > 0``).
    - ``steps[l * D + d]``: dict of per-step arrays of layer ``l``, direction ``d``, e.g. ``gates``
      ``(T, B, G*H)`` (activated, torch's gate order), ``h_seq`` ``(T + 1, B, P)`` (the state
      sequence; forward: initial state at index 0, reverse: at index ``T``).
    - ``dropout_masks[l]``: the scaled mask applied to the output of layer ``l`` (``None``: no
      dropout).
    - ``lengths``: ``(B,)`` int64.
    - ``weights[l * D + d]``: the parameter arrays the forward pass used (references, not copies:
      call ``backward`` before an optimizer changes them in place).

    The tape owns its arrays: it never aliases the caller's input or state.
    """
    owner: int
    inputs: list
    steps: list
    weights: list
    dropout_masks: list
    lengths: np.ndarray
    output_shape: tuple
    batch_first: bool
    unbatched: bool

    def gates(self, layer=0, direction=0):
        """Activated gates of one layer and direction, ``(T, B, G*H)``."""
        return self.steps[layer * self._directions + direction]["gates"]

    @property
    def _directions(self):
        return len(self.steps) // len(self.inputs)


@dataclass
class Gradients:
    """Result of ``layer.backward``.

    - ``dx``: gradient of the input, same shape as the input.
    - ``dstate``: gradient of the initial state, same structure and shapes as ``state``.
    - ``dparams``: dict keyed exactly like ``layer.params``.
    - ``dh``: total ``dL/dh_t`` per step, ``(L*D, T, B, P)``, time-major, row ``l * D + d``.
    - ``dc``: total ``dL/dc_t`` per step, ``(L*D, T, B, H)`` (LSTM only, else ``None``).
    """
    dx: np.ndarray
    dstate: object
    dparams: dict
    dh: np.ndarray
    dc: np.ndarray = field(default=None)
