"""The run-directory protocol shared by the client (core.submit, core.history) and the runtime
(execute): the names of the files in `runs/<run_id>/` and the phases a run goes through.

Every object is written atomically. The client writes `spec.json`, `inputs.pkl` and, for
a notebook cell, `inputs.json`; the runtime writes the rest. Only the process that asked
for a run's values unpickles `outputs.pkl`; everything else (the Jupyter server,
`flyte-jupyter runs show`) reads the text in `outputs.json`, written by the runtime in the
run's own process.
"""

import datetime as dt

SPEC = "spec.json"
"""The RunSpec, from the client."""
INPUTS = "inputs.pkl"
"""Pickled call arguments, from the client."""
INPUTS_SUMMARY = "inputs.json"
"""Per data input of a notebook cell run, its pickled size and sha256, from the client: what
`runs diff` compares without reading (or unpickling) inputs.pkl."""
STATUS = "status.json"
"""The current phase plus every phase's timestamp, host, pid, exit code."""
OUTPUTS = "outputs.pkl"
"""The pickled return value."""
OUTPUTS_SUMMARY = "outputs.json"
"""Text summary of the return value: type, module, bounded repr, pickled size."""
ERROR = "error.json"
"""The exception's type, message and traceback."""
LOGS = "logs.txt"
"""stdout and stderr of the run."""

SUBMITTED = "submitted"
"""Recorded by the client; the runtime has not written status.json yet."""
DOWNLOADING = "downloading"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
"""Written by the runtime when SIGTERM stops it (cancel), and by the client after it stopped
the run (a run killed before it could say so)."""

FINAL = (SUCCEEDED, FAILED, CANCELLED)
PHASES = (SUBMITTED, DOWNLOADING, RUNNING, *FINAL)


def checked_status(doc: object) -> dict | None:
    """status.json as the client may use it, or None when it names no known phase. The run's
    own code can write its run directory, so nothing in it is trusted: only known phases
    with timezone-aware ISO timestamps and an integer exit code are kept."""
    if not isinstance(doc, dict) or not isinstance(doc.get("phase"), str):
        return None
    if doc["phase"] not in PHASES:
        return None
    phases = doc.get("phases")
    checked = dict(
        doc, phases=[p for p in phases if _is_phase(p)] if isinstance(phases, list) else []
    )
    if type(checked.get("exit_code")) is not int:
        checked.pop("exit_code", None)
    return checked


def _is_phase(entry: object) -> bool:
    if not isinstance(entry, dict) or entry.get("phase") not in PHASES:
        return False
    try:
        return dt.datetime.fromisoformat(entry["at"]).tzinfo is not None
    except (KeyError, TypeError, ValueError):
        return False


def checked_error(doc: object) -> dict | None:
    """error.json with text fields only (a missing or odd field is empty), or None."""
    if not isinstance(doc, dict):
        return None
    text = {k: str(doc[k]) if doc.get(k) is not None else "" for k in _ERROR_TEXT}
    missing = doc.get("missing_module")
    return {
        **text,
        "type": text["type"] or "Error",
        "missing_module": missing if isinstance(missing, str) else None,
    }


_ERROR_TEXT = ("type", "module", "message", "traceback")
