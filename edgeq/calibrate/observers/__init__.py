"""Observers: running statistics of one tensor, fed batch by batch by the collector."""

from edgeq.calibrate.observers.base import Observer
from edgeq.calibrate.observers.channel import ChannelMagnitudeObserver
from edgeq.calibrate.observers.hessian import HessianObserver
from edgeq.calibrate.observers.histogram import METHODS, HistogramObserver
from edgeq.calibrate.observers.minmax import MinMaxObserver

__all__ = [
    "METHODS",
    "ChannelMagnitudeObserver",
    "HessianObserver",
    "HistogramObserver",
    "MinMaxObserver",
    "Observer",
]
