"""The NVFP4 weight-only scheme: importing the package registers its handler."""

from edgeq.quantize.schemes.nvfp4 import scheme as scheme
