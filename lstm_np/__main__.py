"""``python -m lstm_np``: the ``lstm-np`` command."""
import sys

from .cli import main

sys.exit(main())
