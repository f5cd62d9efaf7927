"""edgeq_runtime: run an edgeq bundle on the board and measure it.

Needs numpy and onnxruntime or tensorrt; never imports edgeq or torch. Python 3.8+.
"""

__version__ = "0.1.0"
