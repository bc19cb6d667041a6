"""A local cache that makes rebuilding an unchanged tree read no file contents.

Tables in one SQLite file (safe with concurrent writers thanks to WAL and a busy timeout):
file hashes keyed by `(path, size, mtime_ns, inode)`; where each compressed archive member
already sits in a previously built archive. The cache only ever speeds things up: any
failure to read or write it is ignored and the work is simply done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .private import private_sqlite

if TYPE_CHECKING:
    import sqlite3


def _debug(message: str, *args: object) -> None:
    """Log a cache failure; logging is imported only then (it costs a warm build 3 ms)."""
    import logging

    logging.getLogger(__name__).debug(message, *args)


_RACY_NS = 2_000_000_000
"""A file modified this recently may change again within the same mtime tick: don't cache it."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT
);
CREATE TABLE IF NOT EXISTS members (
    key TEXT PRIMARY KEY, archive TEXT, offset INTEGER, length INTEGER
);
CREATE INDEX IF NOT EXISTS members_archive ON members(archive);
"""

StatKey = tuple[str, int, int, int]
"""(absolute path, size, mtime_ns, inode)"""


class HashCache:
    """File-hash and archive-member cache stored at `path` (created on first use)."""

    def __init__(self, path: Path):
        self.path = path
        self._db: sqlite3.Connection | None = None
        import sqlite3  # on first use, not at import: with datetime it costs ~2.5 ms

        try:
            private_sqlite(path)
            db = sqlite3.connect(path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            _debug("hash cache %s unavailable: %s", path, exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _query(self, sql: str, keys: list[str]) -> list[tuple]:
        if self._db is None or not keys:
            return []
        import sqlite3

        rows: list[tuple] = []
        try:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows += self._db.execute(sql.format(marks=marks), chunk).fetchall()
        except sqlite3.Error as exc:
            _debug("hash cache read failed: %s", exc)
        return rows

    def _write(self, sql: str, rows: list[tuple]) -> None:
        if self._db is None or not rows:
            return
        import sqlite3

        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            _debug("hash cache write failed: %s", exc)

    def file_hashes(self, keys: Iterable[StatKey]) -> dict[str, str]:
        """sha256 hex of each file whose cached stat still matches, by path. The files of a
        tree share a folder: one range scan of the primary key under it fetches them all,
        several times faster than looking 20,000 paths up 500 at a time."""
        wanted = {k[0]: k for k in keys}
        if self._db is None or not wanted:
            return {}
        # the folder holding the least and the greatest path holds every path
        folder = os.path.commonpath([min(wanted), max(wanted)]).rstrip("/") + "/"
        import sqlite3

        try:
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, inode, sha256 FROM file_hashes "
                "WHERE path >= ? AND path < ?",
                (folder, folder[:-1] + chr(ord("/") + 1)),
            ).fetchall()
        except (sqlite3.Error, ValueError) as exc:
            _debug("hash cache read failed: %s", exc)
            return {}
        return {row[0]: row[4] for row in rows if wanted.get(row[0]) == row[:4]}

    def store_file_hashes(self, items: Iterable[tuple[StatKey, str]]) -> None:
        cutoff = time.time_ns() - _RACY_NS
        rows = [(*key, sha) for key, sha in items if key[2] < cutoff]
        self._write("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?)", rows)

    def members(self, keys: Iterable[str]) -> dict[str, tuple[str, int, int]]:
        """For each member key already stored in an archive: (archive, offset, length)."""
        rows = self._query(
            "SELECT key, archive, offset, length FROM members WHERE key IN ({marks})", list(keys)
        )
        return {key: (archive, off, n) for key, archive, off, n in rows}

    def store_members(self, archive: Path, items: Iterable[tuple[str, int, int]]) -> None:
        self._write(
            "INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)",
            [(key, str(archive), off, n) for key, off, n in items],
        )

    def forget_archive(self, archive: Path) -> None:
        self._write("DELETE FROM members WHERE archive = ?", [(str(archive),)])
