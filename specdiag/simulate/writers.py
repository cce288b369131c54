"""Trace format v1 writers: `trace` (steps nested in each request line) and `trace-flat` (request lines, then one
`{"event": "step"}` line per step), one block of requests at a time.

Request fields are assembled with polars string expressions; step records, which are ~80x more numerous, with the
byte-matrix renderer in `render.py`. Neither loops in Python per step. Text (names, prompts) is JSON-escaped once,
when the pools and names are built.
"""

from __future__ import annotations

import json
from typing import IO

import numpy as np
import polars as pl

from specdiag.simulate.config import Fleet
from specdiag.simulate.generate import Block
from specdiag.simulate.incidents import TASKS
from specdiag.simulate.prompts import PromptPool
from specdiag.simulate.render import Fixed, Int, Part, Rows, Tail, render, render_table


def _js(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _escaped(values: np.ndarray) -> pl.Series:
    """JSON string literals of an object array of str, escaping each distinct value once."""
    uniques, inverse = np.unique(values.astype(str), return_inverse=True)
    return pl.Series([_js(u) for u in uniques], dtype=pl.String).gather(inverse)


def _num(values: np.ndarray) -> pl.Series:
    return pl.Series(values).cast(pl.String)


class TraceWriter:
    """Writes blocks as trace format v1 JSON lines; nested=False gives the flat variant."""

    def __init__(self, out: IO[bytes], fleet: Fleet, pool: PromptPool, id_prefix: str, nested: bool) -> None:
        self.out, self.fleet, self.pool, self.nested = out, fleet, pool, nested
        self.id_prefix = id_prefix
        self.deployments = np.array([_js(d.name) for d in fleet.deployments], dtype=object)
        self.tasks = np.array([_js(t) for t in TASKS], dtype=object)
        self.lines = 0
        self.step_prefix = b'{"event":"step","request_id":' + _js(id_prefix + "-")[:-1].encode("utf-8")

    def _request_ids(self, b: Block) -> pl.Series:
        """`"<prefix>-<9-digit request number>"` (JSON-quoted): unique across runs with different seeds."""
        opening = _js(self.id_prefix + "-")[
            :-1
        ]  # the escaped prefix with its opening quote; digits need no escaping
        return pl.Series([f'{opening}{i:09d}"' for i in b.index.tolist()], dtype=pl.String)

    def write(self, b: Block) -> None:
        n = len(b.ts)
        ids = self._request_ids(b)
        ts_ms = np.rint(b.ts * 1000).astype(np.int64)
        p = b.params
        shadow = pl.Series(b.shadow)
        frame = pl.DataFrame(
            {
                "id": ids,
                "ts": pl.from_epoch(pl.Series(ts_ms), time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
                "dep": pl.Series(self.deployments[b.dep], dtype=pl.String),
                "target": _escaped(p.target_model),
                "draft": _escaped(p.draft_model),
                "acceptance": _escaped(p.acceptance),
                "tau": _num(b.tau),
                "temp": _num(np.round(p.temperature, 3)),
                "task": pl.Series(self.tasks[b.task], dtype=pl.String),
                "prompt": pl.Series(self.pool.escaped[b.prompt], dtype=pl.String),
                "pt": _num(b.prompt_tokens),
                "ot": _num(b.output_tokens),
                "lat": _num(b.latency_ms),
                "ttft": _num(b.ttft_ms),
                "bs": _num(b.batch_size),
                "q": _num(b.quality),
                "shadow": pl.Series(np.where(b.shadow == 1, "true", "false")),
                "has_shadow": shadow >= 0,
            }
        )
        c = pl.col
        head = pl.concat_str(
            [
                pl.lit('{"request_id":'), c("id"),
                pl.lit(',"ts":"'), c("ts"),
                pl.lit('","deployment":'), c("dep"),
                pl.lit(',"target_model":'), c("target"),
                pl.lit(',"draft_model":'), c("draft"),
                pl.lit(',"acceptance":'), c("acceptance"),
                pl.lit(',"tau":'), c("tau"),
                pl.lit(',"temperature":'), c("temp"),
                pl.lit(',"task":'), c("task"),
                pl.lit(',"prompt":'), c("prompt"),
                pl.lit(',"prompt_tokens":'), c("pt"),
                pl.lit(',"output_tokens":'), c("ot"),
                pl.lit(',"latency_ms":'), c("lat"),
                pl.lit(',"ttft_ms":'), c("ttft"),
                pl.lit(',"batch_size":'), c("bs"),
                pl.lit(',"quality":'), c("q"),
                pl.when(c("has_shadow"))
                .then(pl.concat_str([pl.lit(',"shadow_match":'), c("shadow")]))
                .otherwise(pl.lit("")),
            ]
        )  # fmt: skip
        heads = frame.select(head.alias("h")).to_series()
        last = np.r_[b.step_req[1:] != b.step_req[:-1], True] if len(b.step_req) else np.zeros(0, bool)
        body: list[Part] = [
            b'"step":', Int(b.step),
            b',"drafted":', Int(b.drafted),
            b',"accepted":', Int(b.accepted),
            b',"draft_ms":', Fixed(b.draft_ms),
            b',"verify_ms":', Fixed(b.verify_ms),
        ]  # fmt: skip
        if self.nested:
            # {head},"steps":[{step},{step}]}  -- each step's tail closes the list on the request's last step
            data, lengths = render(len(b.step), [b"{", *body, Tail((b"},", b"}]}\n"), last.astype(np.int64))])
            ends = np.cumsum(lengths)[last]
            starts = np.r_[0, ends[:-1]]
            view = memoryview(data)
            parts: list[bytes | memoryview] = []
            for head, lo, hi in zip(heads.to_list(), starts.tolist(), ends.tolist(), strict=True):
                parts.append(head.encode("utf-8") + b',"steps":[')
                parts.append(view[lo:hi])
            self.out.writelines(parts)
        else:
            self._emit(heads + "}", n)
            data, _ = render(
                len(b.step),
                [
                    self.step_prefix,
                    Rows(
                        render_table(b.index, width=9, zero_pad=True), b.step_req
                    ),  # id digits, once a request
                    b'",',
                    *body,
                    b"}\n",
                ],
            )
            self.out.write(data)
        self.lines += n if self.nested else len(b.step)

    def _emit(self, lines: pl.Series, count: int) -> None:
        if count:
            self.out.write((lines.str.join("\n").item() + "\n").encode("utf-8"))
            self.lines += count

    def close(self) -> None:
        pass
