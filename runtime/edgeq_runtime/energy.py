"""Energy of the measured window, integrated from a power sampler's readings.

"Per inference" means per sample: the window's energy is divided by ``iterations × batch``,
matching ``throughput_per_s``. An idle window recorded before the run gives the baseline for
"above idle". A window shorter than ``MIN_SENSOR_PERIODS`` sensor periods is flagged
``window_too_short``: its numbers are still the measured ones, but few readings stand behind them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

from edgeq_runtime.power import PowerSource, discover
from edgeq_runtime.power.sampler import PowerSampler
from edgeq_runtime.result import EnergyResult

MIN_SENSOR_PERIODS = 10


def open_sampler(
    energy: str, power_source: Optional[PowerSource], power_root: Union[str, Path],
    clock: Callable[[], float] = time.perf_counter,
) -> Tuple[Optional[PowerSource], Optional[PowerSampler], Optional[str], bool]:
    """(source, sampler, why there is none, whether the caller must close the source).

    ``energy == "none"`` measures nothing; a given ``power_source`` is used as is (its owner
    closes it); otherwise the sensors under ``power_root`` are discovered.
    """
    if energy == "none":
        return None, None, "energy measurement disabled (--energy none)", False
    if power_source is not None:
        return power_source, PowerSampler(power_source, clock=clock), None, False
    source, reason = discover(power_root)
    if source is None:
        return None, None, reason, False
    return source, PowerSampler(source, clock=clock), None, True


def start_with_idle(sampler: Optional[PowerSampler], idle_s: float) -> Optional[List[float]]:
    """Start ``sampler`` (if any) and record ``idle_s`` seconds of idle: that window, or None."""
    if sampler is None:
        return None
    sampler.start()
    if idle_s <= 0:
        return None
    start = sampler.mark()
    time.sleep(idle_s)
    return [start, sampler.mark()]


def window_energy(
    sampler: PowerSampler,
    source: PowerSource,
    idle_window: Optional[List[float]],
    run_window: List[float],
    inferences: int,
) -> EnergyResult:
    if sampler.error is not None:
        return EnergyResult.unavailable("the power sensor stopped answering during the run (" + sampler.error + ")")
    t0, t1 = run_window
    window = t1 - t0
    joules = sampler.energy_between(t0, t1)
    average = joules / window if window > 0 else None
    idle_power = None
    if idle_window is not None and idle_window[1] > idle_window[0]:
        idle_power = sampler.energy_between(idle_window[0], idle_window[1]) / (idle_window[1] - idle_window[0])
    per_inference = joules * 1000.0 / inferences if inferences else None
    above_idle = None
    if idle_power is not None and inferences:
        above_idle = (joules - idle_power * window) * 1000.0 / inferences
    times, power = sampler.trace()
    return EnergyResult(
        available=True,
        reason=None,
        source=source.description,
        rails=list(source.rails),
        sample_period_ms=sampler.interval_s * 1000.0,
        idle_power_w=idle_power,
        average_power_w=average,
        energy_per_inference_mj=per_inference,
        energy_above_idle_per_inference_mj=above_idle,
        window_s=window,
        window_too_short=window < MIN_SENSOR_PERIODS * source.period_s,
        trace={"t_s": times, "power_w": power},
        measured_window_s=[t0, t1],
    )
