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
from .errors import UsageError

FINAL = protocol.FINAL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, entry TEXT, digest TEXT, version TEXT, image TEXT,
    executor TEXT, store TEXT, status TEXT, created TEXT, started TEXT, finished TEXT,
    exit_code INTEGER, error TEXT, pid INTEGER, spec TEXT, pid_start TEXT
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

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def spec_json(self) -> dict:
        return json.loads(self.spec) if self.spec else {}


def history_path() -> Path:
    return data_dir() / "runs.sqlite3"


_ready: set[Path] = set()


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    path = history_path()
    if path not in _ready:
        path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=10)
    try:
        if path not in _ready:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            _add_missing_columns(db)
            _ready.add(path)
        with db:
            yield db
    finally:
        db.close()


_COLUMNS = [f.name for f in fields(RunRecord)]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A history written by an older version gains the newer columns (empty in its rows)."""
    present = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for column in _COLUMNS:
        if column not in present:
            db.execute(f"ALTER TABLE runs ADD COLUMN {column}")


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
            f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id LIKE ? ORDER BY created DESC",
            [run_id.replace("%", "") + "%"],
        ).fetchall()
    if not rows:
        raise UsageError(f"no run {run_id!r} in the history; `flyte-jupyter runs` lists them")
    exact = [r for r in rows if r[0] == run_id]
    if len(rows) > 1 and not exact:
        raise UsageError(f"{run_id!r} matches {len(rows)} runs; give more of the id")
    return RunRecord(*(exact[0] if exact else rows[0]))


def recent(limit: int = 50) -> list[RunRecord]:
    with _connect() as db:
        rows = db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY created DESC LIMIT ?", [limit]
        ).fetchall()
    return [RunRecord(*row) for row in rows]


def table(records: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a run listing, shared by the CLI and the notebook views."""
    header = ["run", "status", "digest", "version", "image", "executor", "duration", "name"]
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
        ]
        for r in records
    ]
    return header, rows


def duration(record: RunRecord) -> str:
    """Wall time from submission to finish, for tables; "-" while unknown."""
    if not record.finished:
        return "-"
    seconds = (
        dt.datetime.fromisoformat(record.finished) - dt.datetime.fromisoformat(record.created)
    ).total_seconds()
    return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
