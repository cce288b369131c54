"""The fixed list of reasons a line is quarantined in the ``rejects`` table (documented in docs/trace-format.md)."""

from __future__ import annotations

REASONS: dict[str, str] = {
    "invalid_utf8": "the line is not valid UTF-8",
    "invalid_json": "the line is not valid JSON (or nests more than 128 levels deep)",
    "not_object": "the JSON value is not an object",
    "unknown_event": "`event` is neither 'request' nor 'step'",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong JSON type",
    "out_of_range": "a number is outside its documented range",
    "accepted_gt_drafted": "a step's accepted exceeds its drafted",
    "bad_timestamp": "ts is neither RFC 3339 nor epoch seconds",
    "bad_step": "a nested step is invalid (the detail names the step and its reason)",
    "duplicate_step": "a request lists the same step index twice",
    "unparsable_metrics": "a line that starts like an engine metrics line but does not parse",
    "truncated_input": "the compressed stream ends early or is corrupt",
}
