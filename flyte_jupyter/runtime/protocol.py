"""The run-directory protocol shared by the client (core.submit, core.history) and the runtime
(execute): the names of the files in `runs/<run_id>/` and the phases a run goes through.

Every object is written atomically. The client writes `spec.json` and `inputs.pkl`; the runtime
writes the rest. Only the process that asked for a run's values unpickles `outputs.pkl`;
everything else (the Jupyter server, `flyte-jupyter runs show`) reads the text in
`outputs.json`, written by the runtime in the run's own process.
"""

SPEC = "spec.json"
"""The RunSpec, from the client."""
INPUTS = "inputs.pkl"
"""Pickled call arguments, from the client."""
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
"""Written by the client after it stopped the run."""

FINAL = (SUCCEEDED, FAILED, CANCELLED)
PHASES = (SUBMITTED, DOWNLOADING, RUNNING, *FINAL)
