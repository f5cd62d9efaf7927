"""The mixed scheme: importing the package registers its handler."""

from edgeq.quantize.schemes.mixed import scheme as scheme
