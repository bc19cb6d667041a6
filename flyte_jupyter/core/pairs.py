"""KEY=VALUE arguments, as the CLI and the magics take them."""

from __future__ import annotations

import json
from typing import Any

from .errors import UsageError


def parse_pairs(
    pairs: list[str], flag: str, *, json_values: bool, identifiers: bool = False
) -> dict[str, Any]:
    """`["n=3", "name=x"]` -> `{"n": 3, "name": "x"}`. With `json_values`, a value that is
    valid JSON is decoded and anything else stays a string; `identifiers` requires keys that
    are Python names (function arguments)."""
    out: dict[str, Any] = {}
    shape = "NAME=JSON" if json_values else "KEY=VALUE"
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key or (identifiers and not key.isidentifier()):
            raise UsageError(f"{flag} {pair!r} must look like {shape}")
        if json_values:
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError:
                out[key] = raw
        else:
            out[key] = raw
    return out
