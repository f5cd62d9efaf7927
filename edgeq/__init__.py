"""edgeq: take a trained network to an edge board, small and fast, with numbers to prove it.

Importing edgeq stays light: torch, tensorrt and pynvml are imported only inside the
functions that need them.
"""

from edgeq.errors import EdgeqError

__version__ = "0.1.0"

__all__ = ["EdgeqError", "__version__"]
