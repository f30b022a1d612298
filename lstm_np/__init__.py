"""lstm_np: LSTM, GRU and vanilla RNN in NumPy + Numba, with hand-written BPTT, torch's parameter
layout, and stateful training as a first-class idea.

Shape legend used in every docstring: ``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden
size, ``P`` projected hidden size, ``D`` directions, ``L`` layers.
"""
from .gradcheck import gradcheck
from .recurrent import GRU, LSTM, RNN, Recurrent
from .tape import Gradients, Tape

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "Recurrent", "Tape", "Gradients", "gradcheck"]
