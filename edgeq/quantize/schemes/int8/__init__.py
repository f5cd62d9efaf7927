"""The int8 scheme: importing the package registers its handler."""

from edgeq.quantize.schemes.int8 import scheme as scheme
