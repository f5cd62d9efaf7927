"""The weight_only scheme: importing the package registers its handler."""

from edgeq.quantize.schemes.weight_only import scheme as scheme
