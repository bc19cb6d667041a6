"""The local run history: one row per run, read by `flyte-jupyter runs`, `%flyte_runs` and the
sidebar. Kept in SQLite under the user data dir, safe for several kernels at once."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..runtime import protocol
from ..runtime.locations import data_dir
from .errors import FlyteJupyterError, UsageError
from .private import private_sqlite

FINAL = protocol.FINAL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, entry TEXT, digest TEXT, version TEXT, image TEXT,
    executor TEXT, store TEXT, status TEXT, created TEXT, started TEXT, finished TEXT,
    exit_code INTEGER, error TEXT, pid INTEGER, spec TEXT, pid_start TEXT,
    notebook TEXT, cell TEXT, cell_id TEXT
)
"""


@dataclass
class RunRecord:
    id: str
    entry: str
    digest: str | None
    version: str
    executor: str
    store: str
    status: str
    created: str
    name: str | None = None
    image: str | None = None
    started: str | None = None
    finished: str | None = None
    exit_code: int | None = None
    error: str | None = None
    """One line: the remote exception type and message."""
    pid: int | None = None
    spec: str | None = None
    """The run spec as JSON."""
    pid_start: str | None = None
    """Identity of the process `pid` (boot id and start time): a pid reused by another process
    after the run ended does not match, so it is never signalled."""
    notebook: str | None = None
    """The notebook the run came from (its path as Jupyter names it), if any."""
    cell: str | None = None
    """The cell's label in its kernel, e.g. In[3]."""
    cell_id: str | None = None
    """JupyterLab's id of the cell, stable across re-executions and kernel restarts."""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def spec_json(self) -> dict:
        return json.loads(self.spec) if self.spec else {}

    def origin(self) -> str:
        """Where the run came from, for listings: "analysis.ipynb In[3]", or "-"."""
        parts = [Path(self.notebook).name if self.notebook else "", self.cell or ""]
        return " ".join(p for p in parts if p) or "-"


def history_path() -> Path:
    return data_dir() / "runs.sqlite3"


_ready: set[Path] = set()


class HistoryError(FlyteJupyterError):
    """The history file or its folder cannot be used; the message names it and the fix."""


_UNUSABLE = ("unable to open", "readonly", "disk i/o")


def _unusable(path: Path, exc: sqlite3.Error) -> HistoryError | None:
    """One line for a history file that is damaged or cannot be opened, else None."""
    if type(exc) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
        return HistoryError(
            f"the run history {path} is damaged ({exc}): move it away "
            f"(mv {path} {path}.broken) and a new, empty history starts with the next run"
        )
    if isinstance(exc, sqlite3.OperationalError) and any(w in str(exc) for w in _UNUSABLE):
        return HistoryError(
            f"cannot use the run history {path} ({exc}): make it a file you can write, "
            "or set FLYTE_JUPYTER_DATA_DIR to another folder"
        )
    return None


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    path = history_path()
    if path not in _ready:
        try:
            private_sqlite(path)
        except OSError as exc:  # a file where the data folder (or one above it) should be
            raise HistoryError(
                f"cannot create the data folder {path.parent} for the run history "
                f"({exc.strerror}): move away the file in its place, or set "
                "FLYTE_JUPYTER_DATA_DIR to a folder"
            ) from exc
    db = None
    try:
        db = sqlite3.connect(path, timeout=10)
        if path not in _ready:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            _add_missing_columns(db)
            _ready.add(path)
        with db:
            yield db
    except sqlite3.DatabaseError as exc:
        error = _unusable(path, exc)
        if error is None:
            raise
        raise error from exc
    finally:
        if db is not None:
            db.close()


def check() -> None:
    """Fail now, naming the fix, if the history cannot be used: before a run uploads."""
    with _connect() as db:
        db.execute("SELECT id FROM runs LIMIT 1").fetchall()


_COLUMNS = [f.name for f in fields(RunRecord)]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A history written by an older version gains the newer columns (empty in its rows).
    Older rows kept their notebook only inside the spec (client.notebook): it is copied over."""
    present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for column in _COLUMNS:
        if column not in present:
            db.execute(f"ALTER TABLE runs ADD COLUMN {column}")
    if "notebook" not in present:
        with db:
            for run_id, spec in db.execute("SELECT id, spec FROM runs").fetchall():
                db.execute(
                    "UPDATE runs SET notebook = ? WHERE id = ?", [_spec_notebook(spec), run_id]
                )


def _spec_notebook(spec: object) -> str | None:
    """client.notebook of a stored spec; None when the spec is missing or not one."""
    try:
        notebook = json.loads(spec).get("client", {}).get("notebook")  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError, RecursionError):
        return None
    return notebook if isinstance(notebook, str) else None


def record(run: RunRecord) -> None:
    values = asdict(run)
    with _connect() as db:
        db.execute(
            f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_COLUMNS))})",
            [values[c] for c in _COLUMNS],
        )


def update(run_id: str, **changes: object) -> None:
    unknown = set(changes) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown run fields: {sorted(unknown)}")
    with _connect() as db:
        db.execute(
            f"UPDATE runs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
            [*changes.values(), run_id],
        )


def get(run_id: str) -> RunRecord:
    """The run with this id (or a unique prefix of it)."""
    with _connect() as db:
        rows = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE substr(id, 1, length(?1)) = ?1 "
            "ORDER BY created DESC",  # a prefix, never a LIKE pattern (`_` would match any)
            [run_id],
        ).fetchall()
    if not rows:
        raise UsageError(f"no run {run_id!r} in the history; `flyte-jupyter runs` lists them")
    exact = [r for r in rows if r[0] == run_id]
    if len(rows) > 1 and not exact:
        raise UsageError(f"{run_id!r} matches {len(rows)} runs; give more of the id")
    return RunRecord(*(exact[0] if exact else rows[0]))


def previous(record: RunRecord) -> RunRecord | None:
    """The run before `record` from the same notebook cell (by JupyterLab's cell id, else by
    the cell's label): what the sidebar compares a run with. None for a run not from a cell."""
    where, value = (
        ("cell_id = ?", record.cell_id)
        if record.cell_id
        else ("cell = ? AND cell_id IS NULL", record.cell)  # a front end that sends no ids
    )
    if not value:
        return None
    with _connect() as db:
        row = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE {where} AND notebook IS ? "
            "AND (created < ? OR (created = ? AND id < ?)) ORDER BY created DESC, id DESC LIMIT 1",
            [value, record.notebook, record.created, record.created, record.id],
        ).fetchone()
    return RunRecord(*row) if row else None


def recent(limit: int = 50) -> list[RunRecord]:
    with _connect() as db:
        rows = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY created DESC LIMIT ?", [limit]
        ).fetchall()
    return [RunRecord(*row) for row in rows]


def remove(run_ids: list[str]) -> None:
    """Forget these runs (`flyte-jupyter runs prune`)."""
    with _connect() as db:
        db.executemany("DELETE FROM runs WHERE id = ?", [(run_id,) for run_id in run_ids])


def table(records: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a run listing, shared by the CLI and the notebook views."""
    header = ["run", "status", "digest", "version", "image", "executor", "duration", "name", "from"]
    rows = [
        [
            r.id,
            r.status,
            (r.digest or "-").removeprefix("sha256:")[:12],
            r.version,
            r.image or "-",
            r.executor,
            duration(r),
            r.name or r.entry,
            r.origin(),
        ]
        for r in records
    ]
    return header, rows


def duration(record: RunRecord) -> str:
    """Wall time from submission to finish, for tables; while the run goes, the time since
    submission; "-" while it has not started, or when a time is not one (a row written by
    hand or by an older version must not break every listing)."""
    try:
        if record.finished:
            end = dt.datetime.fromisoformat(record.finished)
        elif record.status in (protocol.DOWNLOADING, protocol.RUNNING):
            end = dt.datetime.now(dt.timezone.utc)
        else:
            return "-"
        seconds = (end - dt.datetime.fromisoformat(record.created)).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
