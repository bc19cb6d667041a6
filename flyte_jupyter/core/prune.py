"""`flyte-jupyter runs prune`: the store keeps every run's inputs, outputs and logs, so it grows
without limit. Pruning deletes chosen runs (their store directory, local logs and history row)
and the bundles that only those runs used: a bundle any remaining run references is kept.

Only runs in this machine's history are known here: a bundle that runs recorded elsewhere use
is deleted when no run in this history still references it (it is uploaded again when needed).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass, field

from ..runtime import protocol
from ..runtime.locations import cache_dir
from . import history
from .errors import UsageError
from .storage import Store
from .submit import RunSpec, recent_runs, store_for

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> dt.timedelta:
    """`7d`, `12h`, `30m`, `45s`, `2w` as a timedelta."""
    match = _AGE.match(text)
    if not match:
        raise UsageError(f"--older-than {text!r}: give a number and a unit, e.g. 7d, 12h, 30m")
    return dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass
class Doomed:
    """One thing pruning deletes: a run's directory or a bundle, with the bytes it holds."""

    kind: str
    """"run" or "bundle"."""
    name: str
    """The run id or the bundle digest."""
    url: str
    store: Store
    bytes: int
    detail: str = ""


@dataclass
class PrunePlan:
    items: list[Doomed] = field(default_factory=list)
    kept_runs: int = 0

    @property
    def runs(self) -> list[Doomed]:
        return [i for i in self.items if i.kind == "run"]

    @property
    def bundles(self) -> list[Doomed]:
        return [i for i in self.items if i.kind == "bundle"]

    @property
    def total_bytes(self) -> int:
        return sum(i.bytes for i in self.items)


def plan_prune(
    older_than: dt.timedelta | None = None,
    keep_last: int | None = None,
    failed_only: bool = False,
    now: dt.datetime | None = None,
) -> PrunePlan:
    """What pruning would delete. A run goes when it has ended, is not among the `keep_last`
    newest runs, and is older than `older_than` / failed when those are given."""
    if older_than is None and keep_last is None and not failed_only:
        raise UsageError("say what to prune: --older-than AGE, --keep-last N and/or --failed-only")
    if keep_last is not None and keep_last < 0:
        raise UsageError(f"--keep-last must be 0 or more, not {keep_last}")
    records = recent_runs(-1)  # newest first
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - older_than if older_than else None
    doomed, kept = [], []
    for position, record in enumerate(records):
        goes = (
            record.is_final
            and (keep_last is None or position >= keep_last)
            and (not failed_only or record.status == protocol.FAILED)
            and (cutoff is None or _created(record) < cutoff)
        )
        (doomed if goes else kept).append(record)

    plan = PrunePlan(kept_runs=len(kept))
    stores: dict[str, Store] = {}
    still_used = {(r.store, r.digest) for r in kept if r.digest}
    bundles_seen: set[tuple[str, str]] = set()
    for record in doomed:
        store = stores.get(record.store) or stores.setdefault(record.store, _store_of(record))
        run_url = store.run_url(record.id)
        detail = f"{record.status}, {record.created[:19].replace('T', ' ')}"
        plan.items.append(Doomed("run", record.id, run_url, store, store.usage(run_url), detail))
        key = (record.store, record.digest or "")
        if record.digest and key not in still_used and key not in bundles_seen:
            bundles_seen.add(key)
            url = store.bundle_url(record.digest)
            plan.items.append(Doomed("bundle", record.digest, url, store, store.usage(url)))
    return plan


def apply_prune(plan: PrunePlan) -> None:
    """Delete what the plan lists: store objects first, then local logs and history rows (a
    failure half-way leaves the history pointing at what is left, never the reverse)."""
    for item in plan.items:
        item.store.remove(item.url)
    for item in plan.runs:
        shutil.rmtree(cache_dir() / "local-runs" / item.name, ignore_errors=True)  # local logs
    history.remove([item.name for item in plan.runs])


def _created(record: history.RunRecord) -> dt.datetime:
    created = dt.datetime.fromisoformat(record.created)
    return created if created.tzinfo else created.replace(tzinfo=dt.timezone.utc)


def _store_of(record: history.RunRecord) -> Store:
    spec = record.spec_json()
    return store_for(RunSpec.from_json(spec)) if spec else Store(record.store)
