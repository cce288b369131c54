"""Every parser: never raises on arbitrary text, accounts for every line; detection picks the right format."""

from __future__ import annotations

import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdiag import formats
from specdiag.formats import ParseContext
from tests.formats_helpers import FIXTURES, accounted, head, lines_of

MODULES = [importlib.import_module(f"specdiag.formats.{name}") for name in formats.FORMATS]

# pieces of real metrics lines, so that generated text reaches deep into the parsers
PIECES = [
    "INFO 09-20 10:00:10 [metrics.py:96] ",
    "(APIServer pid=1) ",
    "\x1b[1;36m",
    "SpecDecoding metrics: ",
    "Speculative metrics: ",
    "SpecDecodeWorker stage times: ",
    "Engine 000: Avg prompt throughput: 1.0 tokens/s, ",
    "Mean acceptance length: ",
    "Accepted: ",
    "Drafted: ",
    "Per-position acceptance rate: ",
    "Number of speculative tokens: ",
    "Number of draft tokens tokens: ",
    "Number of emitted tokens: ",
    "[2026-07-20 10:11:12 DP1 TP0] ",
    "Decode batch, ",
    "accept len: ",
    "vllm:spec_decode_num_drafts_total",
    "trtllm_spec_decode_accepted_tokens_total",
    '{position="0"}',
    '{"id": "a", "created": 1, "metrics": {"speculative_decoding": {',
    '"acceptance_histogram": [1, 2], "num_spec_steps": 3',
    '{"rid": "r", "out": {"meta_info": {"spec_verify_ct": ',
    '[{"timestamp": "07-20-2026 10:11:12.1", "specDecodingStats": {"numDraftTokens": ',
    "nan",
    "12.5%",
    "-3",
    "1e400",
    ", ",
    " ",
    "}",
    "]",
    "\n",
]
text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=30).map("".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(text.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=200)))
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_parsers_never_raise_and_account_for_every_line(module, data: bytes) -> None:
    lines = lines_of(data)
    parsed = module.parse(lines, ParseContext(path="fuzz.log", year=2026))
    assert accounted(parsed, lines)
    assert parsed.format == module.NAME


EXPECTED = {
    "vllm-v1-2025-09-dp.log": "vllm-log",
    "vllm-v1-older.log": "vllm-log",
    "vllm-v0.log": "vllm-log",
    "sglang.log": "sglang-log",
    "vllm-v1-scrape-1.prom": "prometheus",
    "vllm-v1-scrape-2.prom": "prometheus",
    "trtllm-timestamped.prom": "prometheus",
    "sglang-tgi-v0-gauges.prom": "prometheus",
    "vllm-requests.jsonl": "vllm-request",
    "sglang-requests.jsonl": "sglang-request",
    "trtllm-iterations.json": "trtllm-iterations",
    "trtllm-iterations.jsonl": "trtllm-iterations",
}


def test_every_fixture_has_an_expected_format() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in FIXTURES.iterdir())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_is_detected_as_its_format(name: str) -> None:
    assert formats.detect(head(name, 200)) == EXPECTED[name]


@pytest.mark.parametrize(
    "lines",
    [
        ["hello world", "this is a README", "nothing to see"],
        ['{"event": "request", "request_id": "a", "tau": 3}'],
        ["a,b,c", "1,2,3"],
        ["# TYPE process_cpu_seconds_total counter", "process_cpu_seconds_total 12.5"],
        [],
    ],
)
def test_unrelated_text_is_detected_as_none(lines: list[str]) -> None:
    assert formats.detect(lines) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=10))
def test_detection_never_raises(lines: list[str]) -> None:
    assert formats.detect(lines) in (None, *(m.NAME for m in MODULES))


OVERFLOW = [
    b"INFO 01-01 00:00:00 [m.py:1] SpecDecoding metrics: Mean acceptance length: 1e400, Accepted: 1e400 tokens, "
    b"Drafted: 1e999 tokens, Per-position acceptance rate: 1e400",
    b"INFO 01-01 00:00:00 [m.py:1] Speculative metrics: Number of speculative tokens: 1e400, "
    b"Number of draft tokens: 1e400, Number of emitted tokens: 1e400",
    b"[2026-01-01 00:00:00 TP0] Decode batch, accept len: 1e400, #running-req: -1e999",
    b'vllm:spec_decode_num_drafts_total{engine="0"} 1e400 99999999999999999999999',
    b'{"id": "a", "created": 1e300, "metrics": {"speculative_decoding": {"num_spec_steps": 1e400}}}',
    b'{"rid": "r", "timestamp": -1e20, "out": {"meta_info": {"spec_verify_ct": 1e400}}}',
    b'[{"timestamp": "13-45-2026 10:11:12.1", "specDecodingStats": {"numDraftTokens": 1e400}}]',
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
@pytest.mark.parametrize("raw", OVERFLOW)
def test_huge_and_infinite_numbers_are_rejected_or_ignored(module, raw: bytes) -> None:
    lines = lines_of(raw)
    assert accounted(module.parse(lines, ParseContext(path="x", year=2026)), lines)


# real lines from every fixture, shuffled, cut short or with a character changed: reaches the stateful paths
# (companion lines, stage times, scrapes, arrays) that random text rarely does
FIXTURE_LINES = sorted({raw for path in FIXTURES.iterdir() for raw in path.read_bytes().split(b"\n")})


@st.composite
def mangled_lines(draw: st.DrawFn) -> bytes:
    out = []
    for raw in draw(st.lists(st.sampled_from(FIXTURE_LINES), max_size=12)):
        action = draw(st.sampled_from(["keep", "keep", "cut", "flip"]))
        if action == "cut" and raw:
            raw = raw[: draw(st.integers(0, len(raw) - 1))]
        elif action == "flip" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]
        out.append(raw)
    return b"\n".join(out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mangled_lines())
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_parsers_account_for_mangled_real_lines(module, data: bytes) -> None:
    lines = lines_of(data)
    parsed = module.parse(lines, ParseContext(path="fuzz.log", year=2026))
    assert accounted(parsed, lines)


HOSTILE = [
    b'{"id": "a", "created": 1, "metrics": {"speculative_decoding": {"num_spec_steps": '
    + b"1" * 5000
    + b"}}}",
    b'{"id": "a", "created": 1, "metrics": {"speculative_decoding": {"acceptance_histogram": {"1000000000": 1}}}}',
    b'{"rid": "r", "timestamp": 1, "out": {"meta_info": {"spec_correct_drafts_histogram": {"\xc2\xb2": 1}}}}',
    b'vllm:spec_decode_num_accepted_tokens_per_pos_total{position="1000000000"} 1',
    b'vllm:spec_decode_num_accepted_tokens_per_pos_total{position="\xc2\xb2"} 1',
    b'vllm:spec_decode_num_drafts_total{engine="' + b"9" * 5000 + b'"} 1',
    b"INFO 01-01 00:00:00 [loggers.py:1] Engine " + b"9" * 5000 + b": Avg prompt throughput: 1.0 tokens/s",
    b'[{"timestamp": "07-20-2026 10:11:12.1", "specDecodingStats": {"numDraftTokens": '
    + b"1" * 5000
    + b"}}]",
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
@pytest.mark.parametrize("raw", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_numbers_and_indexes_never_blow_up(module, raw: bytes) -> None:
    lines = lines_of(raw + b"\n" + raw)
    assert accounted(module.parse(lines, ParseContext(path="x", year=2026)), lines)
