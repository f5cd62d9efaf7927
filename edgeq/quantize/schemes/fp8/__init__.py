"""The FP8 (E4M3) W8A8 scheme: importing the package registers its handler."""

from edgeq.quantize.schemes.fp8 import scheme as scheme
