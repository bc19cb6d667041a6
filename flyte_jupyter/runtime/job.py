"""The end of an exported notebook job: report the notebook's results."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any

OUTPUT_DIR_ENV = "FLYTE_JUPYTER_OUTPUT_DIR"


def write_results(namespace: dict[str, Any]) -> dict[str, Any]:
    """The notebook's top-level values that JSON can hold: printed as one line on stdout and,
    when $FLYTE_JUPYTER_OUTPUT_DIR is set (e.g. a mounted volume), written to results.json."""
    results: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType | types.FunctionType | type):
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        results[name] = value
    text = json.dumps(results, sort_keys=True)
    print(f"flyte-jupyter results: {text}", file=sys.stdout, flush=True)
    directory = os.environ.get(OUTPUT_DIR_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "results.json").write_text(text + "\n")
    return results
