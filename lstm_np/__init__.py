"""lstm_np: LSTM, GRU and vanilla RNN in NumPy + Numba, with hand-written BPTT, torch's parameter
layout, and stateful training as a first-class idea.

Shape legend used in every docstring: ``T`` steps, ``B`` batch, ``I`` input size, ``H`` hidden
size, ``P`` projected hidden size, ``D`` directions, ``L`` layers.
"""
from . import convert, data, losses, optim
from ._threads import get_num_threads, set_num_threads
from ._workspace import release_memory
from .convert import (from_keras, from_onnx, from_torch, load_onnx, to_keras, to_onnx,
                      to_torch_state_dict)
from .errors import FileFormatError
from .gradcheck import gradcheck
from .losses import cross_entropy, mse
from .model import LastStep, Linear, Sequential
from .modelfile import load, save
from .optim import SGD, Adam, clip_grad_norm
from .recurrent import GRU, LSTM, RNN, Recurrent
from .state import StateStore
from .streaming import Stream
from .tape import Gradients, Tape
from .trainer import History, NonFiniteError, Trainer

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "Recurrent", "Tape", "Gradients", "gradcheck", "Stream",
           "Linear", "LastStep", "Sequential", "StateStore", "Trainer", "History",
           "NonFiniteError", "FileFormatError", "SGD", "Adam", "clip_grad_norm", "mse",
           "cross_entropy", "data", "losses", "optim", "convert", "save", "load", "from_torch",
           "to_torch_state_dict", "from_keras", "to_keras", "from_onnx", "to_onnx", "load_onnx",
           "release_memory", "set_num_threads", "get_num_threads"]
