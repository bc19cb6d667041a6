"""The executor contract and the registry executors plug into.

Executors register in the `flyte_jupyter.executors` entry-point group and are imported only
when asked for, so a missing optional extra is one line naming the `pip install` that adds it
instead of an import error at start-up.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import UsageError

if TYPE_CHECKING:
    from .. import history
    from ..storage import Store
    from ..submit import RunSpec

EXECUTOR_GROUP = "flyte_jupyter.executors"
INSTALL_HINTS = {
    "docker": 'pip install "flyte-jupyter[docker]"',
    "flyte": 'pip install "flyte-jupyter[flyte]"',
}
"""How to add what an executor needs beyond the base install (none for `local`)."""
SETTINGS = {
    "flyte": (
        "flyte_config", "endpoint", "insecure", "project", "domain", "org", "images",
        "resources", "secrets", "retries", "timeout",
    ),
}  # fmt: skip
"""The settings each executor takes as options: front doors pass them with their sources
already layered (session, sidebar), see `executor_options`."""


@dataclass(frozen=True)
class LogLine:
    stream: str
    """"stdout" or "stderr"."""
    text: str


class Execution(Protocol):
    """An executor's handle on one started run."""

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None if still running when `timeout` passed."""

    def cancel(self) -> None: ...

    def log_lines(self) -> Iterator[LogLine]:
        """Output as it is produced, ending when the run ends."""

    def output_so_far(self) -> str:
        """Everything written so far, without waiting."""


class Executor(Protocol):
    name: str

    def launch(self, spec: RunSpec, store: Store) -> Execution: ...

    def attach(self, record: history.RunRecord, store: Store) -> Execution | None:
        """A handle on a run started by another process, if this executor can reach it."""


@lru_cache(maxsize=1)
def _executor_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=EXECUTOR_GROUP)}


def available_executors() -> list[str]:
    return sorted(_executor_entry_points())


def executor_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings `values` that executor `name` takes, for `get_executor(name, **options)`."""
    return {k: values[k] for k in SETTINGS.get(name, ()) if values.get(k) not in (None, [], {})}


def install_hint(name: str) -> str:
    return INSTALL_HINTS.get(name, f'pip install "flyte-jupyter[{name}]"')


def get_executor(name: str, **options: Any) -> Executor:
    """The executor registered under `name`, imported on first use. An executor whose extra
    is missing raises ImportError on import or construction; both become one UsageError."""
    entry_point = _executor_entry_points().get(name)
    if entry_point is None:
        known = ", ".join(available_executors()) or "none"
        raise UsageError(f"unknown executor {name!r}: available executors are {known}")
    try:
        return entry_point.load()(**options)
    except ImportError as exc:
        raise UsageError(
            f"executor {name!r} needs extra packages ({exc.name or exc}): {install_hint(name)}"
        ) from exc
