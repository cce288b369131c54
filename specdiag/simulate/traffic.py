"""Arrivals over the time range with a daily load cycle, and the requests' deployment, task and temperature.

Load factor load(t) = 1 + A * cos(2 pi (hour(t) - peak_hour) / 24), mean 1 over a day. Arrivals follow it: the
range is cut into 10-minute slices whose request counts are multinomial with probabilities proportional to the load,
and arrivals are uniform within a slice. Requests are produced in time order, slice by slice, in bounded blocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from specdiag.simulate.config import Fleet
from specdiag.simulate.incidents import TASKS

SLICE_S = 600.0


def load_factor(fleet: Fleet, t: np.ndarray) -> np.ndarray:
    """Relative load at epoch seconds t (mean 1 over a day)."""
    hour = (np.asarray(t) % 86400.0) / 3600.0
    return 1.0 + fleet.daily_amplitude * np.cos(2 * np.pi * (hour - fleet.peak_hour) / 24.0)


def arrival_blocks(
    fleet: Fleet, n_requests: int, rng: np.random.Generator, block_requests: int
) -> Iterator[np.ndarray]:
    """Sorted arrival times (epoch seconds) in blocks of about block_requests, covering whole slices."""
    start = fleet.start.timestamp()
    n_slices = max(1, int(np.ceil(fleet.days * 86400.0 / SLICE_S)))
    edges = start + SLICE_S * np.arange(n_slices + 1)
    edges[-1] = min(edges[-1], start + fleet.days * 86400.0)
    weight = load_factor(fleet, (edges[:-1] + edges[1:]) / 2) * np.diff(edges)
    counts = rng.multinomial(n_requests, weight / weight.sum())
    first = 0
    while first < n_slices:
        last, total = first, 0
        while last < n_slices and (total == 0 or total + counts[last] <= block_requests):
            total += counts[last]
            last += 1
        c = counts[first:last]
        slice_start = np.repeat(edges[first:last], c)
        width = np.repeat(np.diff(edges[first : last + 1]), c)
        t = slice_start + rng.random(total) * width
        # sort within each slice (slices are already in order)
        t = t[np.lexsort((t, np.repeat(np.arange(len(c)), c)))]
        first = last
        for i in range(0, total, block_requests):  # a dense slice is split: memory stays bounded
            yield t[i : i + block_requests]


@dataclass
class Mix:
    """Per-deployment categorical distributions as padded cumulative matrices (rows: deployments)."""

    dep_cum: np.ndarray  # (D,)
    task_cum: np.ndarray  # (D, T)
    temp_values: np.ndarray  # (D, M)
    temp_cum: np.ndarray  # (D, M)

    @classmethod
    def of(cls, fleet: Fleet) -> Mix:
        deps = fleet.deployments
        share = np.array([d.share for d in deps], dtype=float)
        task = np.array([[d.tasks.get(t, 0.0) for t in TASKS] for d in deps], dtype=float)
        m = max(len(d.temperatures) for d in deps)
        values = np.zeros((len(deps), m))
        shares = np.zeros((len(deps), m))
        for i, d in enumerate(deps):
            values[i, : len(d.temperatures)] = d.temperatures
            shares[i, : len(d.temperatures)] = d.temperature_shares
        return cls(
            _cumulative(share / share.sum()),
            _cumulative(task / task.sum(axis=1, keepdims=True)),
            values,
            _cumulative(shares / shares.sum(axis=1, keepdims=True)),
        )

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(deployment index, task index, temperature) of n requests."""
        dep = np.minimum((rng.random(n)[:, None] >= self.dep_cum[None, :]).sum(axis=1), len(self.dep_cum) - 1)
        task = (rng.random(n)[:, None] >= self.task_cum[dep]).sum(axis=1)
        task = np.minimum(task, self.task_cum.shape[1] - 1)
        k = (rng.random(n)[:, None] >= self.temp_cum[dep]).sum(axis=1)
        k = np.minimum(k, self.temp_cum.shape[1] - 1)
        return dep, task, self.temp_values[dep, k]


def _cumulative(p: np.ndarray) -> np.ndarray:
    """Cumulative shares along the last axis, with rounding error removed so that u in [0, 1) never lands on a
    zero-share category past the last positive one."""
    cum = np.cumsum(p, axis=-1)
    return np.where(cum >= 1.0 - 1e-9, 1.0, cum)
