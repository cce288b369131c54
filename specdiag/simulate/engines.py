"""Engine-style outputs: the same simulated steps summarised as a serving engine would print them.

Steps are binned into intervals per engine (one engine per deployment) and written once no later request can add
to them (requests arrive in time order and steps end after their arrival). Line shapes follow the engines' format
strings (docs: ../shared/engine-formats.md, vLLM V1 `SpecDecoding metrics` since 2025-09, SGLang `Decode batch`,
vLLM Prometheus counters). Timestamps are printed in UTC; vLLM log lines carry no year.
"""

from __future__ import annotations

import time
from typing import IO

import numpy as np

from specdiag.simulate.acceptance import MAX_POSITIONS
from specdiag.simulate.config import Fleet
from specdiag.simulate.generate import Block

# per-window statistics, summed
NUM_DRAFTS, DRAFTED, ACCEPTED, EMITTED, STEPS, BATCH_SUM, PROMPT_TOKENS, ARRIVALS = range(8)
HIST = 8  # HIST + a: verify steps with exactly a accepted tokens, a = 0..16
N_STATS = HIST + MAX_POSITIONS + 1

ANSI_PROCESS = "\x1b[1;36m(APIServer pid=2187)\x1b[0;0m "


class Windows:
    """Sums of step statistics per (engine, interval index); interval i of engine e covers
    [i * width[e], (i + 1) * width[e]) in epoch seconds."""

    def __init__(self, width_s: np.ndarray) -> None:
        self.width = np.asarray(width_s, dtype=float)
        self.n_engines = len(self.width)
        self.keys = np.zeros(0, dtype=np.int64)
        self.stats = np.zeros((0, N_STATS))
        self.tau = np.zeros(0, dtype=np.int64)

    def add(self, b: Block) -> None:
        eng = b.dep[b.step_req]
        step_keys = np.floor(b.step_end / self.width[eng]).astype(np.int64) * self.n_engines + eng
        req_keys = np.floor(b.ts / self.width[b.dep]).astype(np.int64) * self.n_engines + b.dep
        keys, inverse = np.unique(np.concatenate([self.keys, step_keys, req_keys]), return_inverse=True)
        k = len(keys)
        old, steps, reqs = np.split(inverse, [len(self.keys), len(self.keys) + len(step_keys)])
        stats = np.zeros((k, N_STATS))
        stats[old] += self.stats  # keys are unique within each part, so plain fancy-index addition is exact
        drafting = b.drafted > 0
        for col, weights in (
            (NUM_DRAFTS, drafting),
            (DRAFTED, b.drafted),
            (ACCEPTED, b.accepted),
            (EMITTED, b.accepted + 1),
            (STEPS, None),
            (BATCH_SUM, b.batch_size[b.step_req]),
        ):
            stats[:, col] += np.bincount(steps, weights=weights, minlength=k)
        stats[:, PROMPT_TOKENS] += np.bincount(reqs, weights=b.prompt_tokens, minlength=k)
        stats[:, ARRIVALS] += np.bincount(reqs, minlength=k)
        hist = np.bincount(
            steps[drafting] * (MAX_POSITIONS + 1) + b.accepted[drafting], minlength=k * (MAX_POSITIONS + 1)
        )
        stats[:, HIST:] += hist.reshape(k, MAX_POSITIONS + 1)
        tau = np.zeros(k, dtype=np.int64)
        tau[old] = self.tau
        np.maximum.at(tau, steps, b.drafted)
        self.keys, self.stats, self.tau = keys, stats, tau

    def pop(self, before: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(interval index, engine, end time, stats, max drafted) of intervals ending at or before `before`,
        ordered by end time then engine; they are removed."""
        eng = self.keys % self.n_engines
        idx = self.keys // self.n_engines
        end = (idx + 1) * self.width[eng]
        done = end <= before
        order = np.lexsort((eng[done], end[done]))
        out = (
            idx[done][order],
            eng[done][order],
            end[done][order],
            self.stats[done][order],
            self.tau[done][order],
        )
        keep = ~done
        self.keys, self.stats, self.tau = self.keys[keep], self.stats[keep], self.tau[keep]
        return out


def _utc(ts: float, fmt: str) -> str:
    return time.strftime(fmt, time.gmtime(ts))


class EngineWriter:
    """Base: bins blocks into intervals and writes finished ones as text lines."""

    def __init__(self, out: IO[bytes], fleet: Fleet, width_s: np.ndarray) -> None:
        self.out, self.fleet = out, fleet
        self.windows = Windows(width_s)
        self.lines = 0
        self.intervals = 0  # intervals with a metrics line (or scrapes, for Prometheus)

    def write(self, b: Block) -> None:
        self.windows.add(b)
        self._emit(self.windows.pop(float(b.ts[-1])))  # later requests arrive after b's last one

    def close(self) -> None:
        self._emit(self.windows.pop(np.inf))

    def _put(self, lines: list[str]) -> None:
        if lines:
            self.out.write(("\n".join(lines) + "\n").encode("utf-8"))
            self.lines += len(lines)

    def _emit(self, popped: tuple[np.ndarray, ...]) -> None:
        raise NotImplementedError


class VllmWriter(EngineWriter):
    """vLLM V1 logs: per 10 s interval and engine, an `Engine NNN:` line then its `SpecDecoding metrics:` line
    (omitted when the interval had no drafts), plus access-log and start-up noise."""

    INTERVAL_S = 10.0

    def __init__(self, out: IO[bytes], fleet: Fleet) -> None:
        super().__init__(out, fleet, np.full(len(fleet.deployments), self.INTERVAL_S))
        t0 = fleet.start.timestamp()
        head = [f"INFO {_utc(t0, '%m-%d %H:%M:%S')} [__init__.py:216] Automatically detected platform cuda."]
        head.append(
            f"{ANSI_PROCESS}INFO {_utc(t0, '%m-%d %H:%M:%S')} [api_server.py:1839] vLLM API server version 0.11.0"
        )
        for e, d in enumerate(fleet.deployments):
            head.append(
                f"{ANSI_PROCESS}INFO {_utc(t0, '%m-%d %H:%M:%S')} [core.py:93] Engine {e:03d}: serving "
                f"{d.name} ({d.target_model}), speculative_config={{'model': '{d.draft_model}', "
                f"'num_speculative_tokens': {d.tau}}}"
            )
        self._put(head)

    def _emit(self, popped: tuple[np.ndarray, ...]) -> None:
        _, eng, end, stats, tau = popped
        lines: list[str] = []
        dt = self.INTERVAL_S
        for e, t, s, k in zip(eng.tolist(), end.tolist(), stats, tau.tolist(), strict=True):
            stamp = f"INFO {_utc(t, '%m-%d %H:%M:%S')}"
            if s[ARRIVALS]:
                port = 40000 + int(t) % 20000
                lines.append(
                    f'{ANSI_PROCESS}INFO:     127.0.0.1:{port} - "POST /v1/chat/completions HTTP/1.1" 200 OK'
                )
            running = s[BATCH_SUM] / s[STEPS] if s[STEPS] else 0.0
            lines.append(
                f"{ANSI_PROCESS}{stamp} [loggers.py:123] Engine {e:03d}: "
                f"Avg prompt throughput: {s[PROMPT_TOKENS] / dt:.1f} tokens/s, "
                f"Avg generation throughput: {s[EMITTED] / dt:.1f} tokens/s, "
                f"Running: {round(running)} reqs, Waiting: 0 reqs, "
                f"GPU KV cache usage: {min(99.0, 1.5 * running):.1f}%, Prefix cache hit rate: 0.0%"
            )
            drafts = s[NUM_DRAFTS]
            if drafts == 0:
                continue
            self.intervals += 1
            reached = np.cumsum(s[HIST : HIST + MAX_POSITIONS + 1][::-1])[::-1]  # steps with accepted >= a
            rates = ", ".join(f"{reached[i + 1] / drafts:.3f}" for i in range(k))
            lines.append(
                f"{ANSI_PROCESS}{stamp} [metrics.py:96] SpecDecoding metrics: "
                f"Mean acceptance length: {1 + s[ACCEPTED] / drafts:.2f}, "
                f"Accepted throughput: {s[ACCEPTED] / dt:.2f} tokens/s, "
                f"Drafted throughput: {s[DRAFTED] / dt:.2f} tokens/s, "
                f"Accepted: {int(s[ACCEPTED])} tokens, Drafted: {int(s[DRAFTED])} tokens, "
                f"Per-position acceptance rate: {rates}, "
                f"Avg Draft acceptance rate: {100 * s[ACCEPTED] / s[DRAFTED]:.1f}%"
            )
        self._put(lines)


class SglangWriter(EngineWriter):
    """SGLang logs: `Decode batch` lines per engine (DP rank = deployment), plus `Prefill batch` noise lines.

    A server logs every 40 decode iterations, each advancing every running request one verify step, so a line covers
    #running-req x 40 steps: readers weight a line's accept len by #running-req. Simulated traffic is sparser than the
    nominal batch sizes, so intervals (40 x the typical step time) are pooled until they hold at least
    MIN_LINE_STEPS verify steps, and #running-req is their steps / 40 (rounded: within 2.5% of the true weight).
    """

    DECODE_LOG_INTERVAL = 40  # iterations
    MIN_LINE_STEPS = 800  # verify steps per Decode batch line, at least (#running-req >= 20)
    TOKEN_CAPACITY = 200_000  # KV cache slots, for `token usage`

    def __init__(self, out: IO[bytes], fleet: Fleet) -> None:
        width = [
            max(0.1, round(self.DECODE_LOG_INTERVAL * d.cost.step_ms(d.tau, d.batch_size) / 1000.0, 1))
            for d in fleet.deployments
        ]
        super().__init__(out, fleet, np.array(width))
        self.pooled = np.zeros((len(fleet.deployments), N_STATS))  # intervals not yet written, per engine
        self.since = np.zeros(len(fleet.deployments))  # start of the first pooled interval
        self.closing = False

    def close(self) -> None:
        self.closing = True
        super().close()
        for e in range(len(self.pooled)):  # what is left when the run ends
            if self.pooled[e, NUM_DRAFTS]:
                self._put([self._decode_line(e, float(self.since[e]) + float(self.windows.width[e]))])

    def _emit(self, popped: tuple[np.ndarray, ...]) -> None:
        _, eng, end, stats, _ = popped
        lines: list[str] = []
        for e, t, s in zip(eng.tolist(), end.tolist(), stats, strict=True):
            if not self.pooled[e, NUM_DRAFTS]:
                self.since[e] = t - self.windows.width[e]
            self.pooled[e] += s
            if s[ARRIVALS]:
                lines.append(
                    f"[{_utc(t, '%Y-%m-%d %H:%M:%S')} DP{e} TP0] Prefill batch, #new-seq: {int(s[ARRIVALS])}, "
                    f"#new-token: {int(s[PROMPT_TOKENS])}, #cached-token: 0, token usage: 0.00, #running-req: 0, "
                    "#queue-req: 0"
                )
            if self.pooled[e, NUM_DRAFTS] >= self.MIN_LINE_STEPS:
                lines.append(self._decode_line(e, t))
        self._put(lines)

    def _decode_line(self, e: int, t: float) -> str:
        s, seconds = self.pooled[e], max(t - float(self.since[e]), float(self.windows.width[e]))
        running = max(1, round(s[NUM_DRAFTS] / self.DECODE_LOG_INTERVAL))
        tokens = running * 300
        self.intervals += 1
        line = (
            f"[{_utc(t, '%Y-%m-%d %H:%M:%S')} DP{e} TP0] Decode batch, #running-req: {running}, #token: {tokens}, "
            f"token usage: {tokens / self.TOKEN_CAPACITY:.2f}, accept len: {1 + s[ACCEPTED] / s[NUM_DRAFTS]:.2f}, "
            f"accept rate: {s[ACCEPTED] / s[DRAFTED]:.2f}, cuda graph: True, "
            f"gen throughput (token/s): {s[EMITTED] / seconds:.2f}, #queue-req: 0"
        )
        self.pooled[e] = 0.0
        return line


class PrometheusWriter(EngineWriter):
    """Scrapes of vLLM V1 spec-decoding counters (cumulative since start) every 5 minutes over the whole range,
    one label set per deployment (`model_name` = deployment, `engine="0"`), samples timestamped in ms. A tau change is
    a restart: the counters start again from 0, with one per-position counter per position of the new tau."""

    SCRAPE_S = 300.0
    METRICS = (
        ("vllm:spec_decode_num_drafts_total", "Number of spec decoding drafts.", NUM_DRAFTS),
        ("vllm:spec_decode_num_draft_tokens_total", "Number of draft tokens.", DRAFTED),
        ("vllm:spec_decode_num_accepted_tokens_total", "Number of accepted tokens.", ACCEPTED),
    )

    def __init__(self, out: IO[bytes], fleet: Fleet) -> None:
        super().__init__(out, fleet, np.full(len(fleet.deployments), self.SCRAPE_S))
        # a server exports one per-position counter per draft position of its tau; a new tau means a restart
        self.tau = [d.tau for d in fleet.deployments]
        self.total = np.zeros((len(fleet.deployments), N_STATS))
        self.next_scrape = int(fleet.start.timestamp() // self.SCRAPE_S)  # interval index
        self.last_scrape = int(np.ceil(fleet.end.timestamp() / self.SCRAPE_S))
        self.created = np.full(len(fleet.deployments), fleet.start.timestamp())
        self.closing = False

    def close(self) -> None:
        self.closing = True
        super().close()

    def _emit(self, popped: tuple[np.ndarray, ...]) -> None:
        idx, eng, _, stats, _ = popped
        upto = int(idx.max()) + 1 if len(idx) else self.next_scrape
        if self.closing:  # scrape until the end of the range, idle or not
            upto = max(upto, self.last_scrape)
        lines: list[str] = []
        j = 0
        for i in range(self.next_scrape, upto):
            while j < len(idx) and idx[j] == i:
                e = int(eng[j])
                tau = self._configured_tau(e, (i + 1) * self.SCRAPE_S)
                if tau != self.tau[e]:  # restarted with the new tau: counters start again from 0
                    self.tau[e], self.total[e], self.created[e] = tau, 0.0, i * self.SCRAPE_S
                self.total[e] += stats[j]
                j += 1
            lines.extend(self._scrape((i + 1) * self.SCRAPE_S))
        self.next_scrape = max(self.next_scrape, upto)
        self._put(lines)

    def _configured_tau(self, e: int, t: float) -> int:
        """The tau deployment ``e`` is configured with at time ``t`` (a tau_misconfig incident changes it)."""
        from specdiag.simulate.incidents import resolve

        one = np.ones(1, dtype=np.int64)
        return int(resolve(self.fleet, e * one, 0 * one, np.zeros(1), np.full(1, t)).tau[0])

    def _scrape(self, t: float) -> list[str]:
        ms = int(round(t * 1000))
        self.intervals += 1
        lines = []
        for name, help_text, col in self.METRICS:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            for e, d in enumerate(self.fleet.deployments):
                labels = f'model_name="{d.name}",engine="0"'
                lines.append(f"{name}{{{labels}}} {float(self.total[e, col])!r} {ms}")
                lines.append(
                    f"{name.removesuffix('_total')}_created{{{labels}}} {float(self.created[e])!r} {ms}"
                )
        name = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
        lines += [f"# HELP {name} Accepted tokens per draft position.", f"# TYPE {name} counter"]
        for e, d in enumerate(self.fleet.deployments):
            reached = np.cumsum(self.total[e, HIST : HIST + MAX_POSITIONS + 1][::-1])[::-1]
            for pos in range(self.tau[e]):
                labels = f'model_name="{d.name}",engine="0",position="{pos}"'
                lines.append(f"{name}{{{labels}}} {float(reached[pos + 1])!r} {ms}")
        return lines
