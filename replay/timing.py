"""Stage timings in milliseconds: CUDA events on a GPU, the wall clock on a CPU (where kernels run synchronously)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class StageClock:
    """Accumulates the time of named stages, keyed by (stage, step); read the totals once, after the run."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._ms: dict[tuple[str, int], float] = defaultdict(float)
        self._events: list[tuple[str, int, Any, Any]] = []

    @contextmanager
    def measure(self, stage: str, step: int) -> Iterator[None]:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events.append((stage, step, start, end))
        else:
            t0 = time.perf_counter()
            yield
            self._ms[(stage, step)] += (time.perf_counter() - t0) * 1000.0

    def resolve(self) -> dict[tuple[str, int], float]:
        """Milliseconds per (stage, step); on CUDA this synchronises once and reads the event pairs."""
        if self._events:
            torch.cuda.synchronize()
            for stage, step, start, end in self._events:
                self._ms[(stage, step)] += float(start.elapsed_time(end))
            self._events.clear()
        return dict(self._ms)

    def total(self, stage: str) -> float:
        return sum(ms for (name, _), ms in self.resolve().items() if name == stage)
