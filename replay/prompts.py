"""Reading prompt records (JSON Lines): one object a line with `prompt_id` and `prompt` (text) or `prompt_ids`.

Optional production settings per record: `tau`, `temperature`, `top_p`; and provenance: `request_id`,
`finding_id`, `deployment`, `why`. Other keys are kept as they are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from specdiag.errors import InputError
from specdiag.speedup import TAU_LIMIT


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Parse and validate a prompts file; a bad line raises InputError naming the file, the line and the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    records = []
    seen: dict[str, int] = {}  # prompt_id -> its line: results and saved replays are keyed by it
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON: {exc.msg}") from exc
        try:
            record = validate_record(obj)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: {exc}") from exc
        if record["prompt_id"] in seen:
            raise InputError(
                f"{path}:{number}: prompt_id {record['prompt_id']!r} repeats line {seen[record['prompt_id']]}"
            )
        seen[record["prompt_id"]] = number
        records.append(record)
    if not records:
        raise InputError(f"{path}: no prompt records")
    return records


def validate_record(obj: Any) -> dict[str, Any]:
    """Check one record (raises ValueError with the reason); returns a copy with prompt_id as a string."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    if obj.get("prompt_id") is None or isinstance(obj["prompt_id"], bool | dict | list):
        raise ValueError("missing prompt_id (a string or number)")
    record = dict(obj, prompt_id=str(obj["prompt_id"]))
    has_text, has_ids = obj.get("prompt") is not None, obj.get("prompt_ids") is not None
    if has_text == has_ids:
        raise ValueError("give exactly one of prompt (text) and prompt_ids (token ids)")
    if has_text and (not isinstance(obj["prompt"], str) or not obj["prompt"]):
        raise ValueError("prompt must be a non-empty string")
    if has_text:
        try:
            obj["prompt"].encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\ud800") is not text a tokenizer takes
            raise ValueError(f"prompt is not valid Unicode: {exc.reason} at character {exc.start}") from exc
    if has_ids:
        ids = obj["prompt_ids"]
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids)
        ):
            raise ValueError("prompt_ids must be a non-empty list of non-negative integers")
    if obj.get("tau") is not None and (
        not isinstance(obj["tau"], int) or isinstance(obj["tau"], bool) or not 0 <= obj["tau"] <= TAU_LIMIT
    ):
        raise ValueError(f"tau must be an integer in [0, {TAU_LIMIT}] (as --tau)")
    if obj.get("acceptance") is not None and not isinstance(obj["acceptance"], str):
        raise ValueError("acceptance must be a string (the production rule, e.g. typical)")
    for key, low, high in (("temperature", 0.0, math.inf), ("top_p", 0.0, 1.0)):
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{key} must be a number")
        if not (low <= value <= high) or (key == "top_p" and value == 0):
            raise ValueError(f"{key} out of range: {value}")
    return record
