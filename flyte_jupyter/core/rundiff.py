"""Why did my version change? Compare two runs: the files of their bundles, the notebook
definitions their generated cell modules hold, their inputs and their image and settings.

Everything is read as bytes or text: archives are listed and hashed, never extracted, and
inputs.pkl is hashed, never unpickled (unpickling runs code)."""

from __future__ import annotations

import ast
import hashlib
import itertools
import pickletools
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..runtime import protocol
from ..runtime.cells import ASSIGNED, CELL_SOURCE
from ..runtime.locations import cache_dir
from ..runtime.manifest import ManifestEntry, compute_digest
from . import history
from .errors import FlyteJupyterError, RunError
from .notebook import GENERATED_PACKAGE
from .preview import human_size
from .submit import Run

_CELL_PREFIX = f"{GENERATED_PACKAGE}/cell_"
_MAX_MODULE_TEXT = 4 * 1024**2
"""Generated cell modules are read as text up to this size; beyond it only hashed."""
_MEMO_OPS = {"MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT", "FRAME"}
_CELL_NAMES = {
    CELL_SOURCE: "the cell's own code", ASSIGNED: None, "<module>": None,
    "CELL_SOURCE": "the cell's own code", "ASSIGNED": None,  # their names before 2026-11-27
}  # fmt: skip
"""The generated module's own names: shown as the cell's code, or not at all."""
_SAME_BY_DESIGN = (
    "run_id", "run_dir", "created", "name", "digest", "bundle_url", "version",
    "notebook", "cell", "cell_id",
)  # fmt: skip
"""Spec fields that differ for every run, are reported as the bundle itself, or say where the
run came from (not how it ran)."""


@dataclass(frozen=True)
class Change:
    """A file of the bundle or an input that differs, with its sizes in bytes."""

    name: str
    before: int | None
    """Size in the first run; None when added."""
    after: int | None
    """Size in the second run; None when removed."""


@dataclass(frozen=True)
class SettingChange:
    key: str
    before: Any
    after: Any


@dataclass
class RunDiff:
    """What differs between run `a` and run `b` (b is the later one, usually)."""

    a: str
    b: str
    digest_a: str | None
    digest_b: str | None
    version_a: str
    version_b: str
    files: list[Change] = field(default_factory=list)
    definitions: dict[str, list[str]] = field(default_factory=dict)
    """"added", "removed", "changed": top-level names of the generated cell modules."""
    inputs: list[Change] = field(default_factory=list)
    """A cell's input values by name; for other runs the whole inputs.pkl."""
    settings: list[SettingChange] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def same_code(self) -> bool:
        return self.digest_a == self.digest_b

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def short(self) -> str:
        """One line for a notebook cell: what changed, naming a few paths and names."""
        parts = []
        if self.files:
            parts.append(_count_names("file", [f.name for f in self.files]))
        defs = [n for names in self.definitions.values() for n in names]
        if defs:
            parts.append(_count_names("definition", defs))
        if self.inputs:
            parts.append(_count_names("input", [i.name for i in self.inputs]))
        if self.settings:
            parts.append(_count_names("setting", [s.key for s in self.settings]))
        return ", ".join(parts) if parts else "nothing"


@dataclass(frozen=True)
class Snapshot:
    """What a run is made of, as far as a diff needs: hashes and sizes, the generated cell
    module's text, the spec. Built from the store (`snapshot`) or, in the kernel, from the
    bundle and inputs it just sent (no store round trip)."""

    run_id: str
    digest: str | None
    version: str
    files: dict[str, tuple[int, str]]
    """Bundle path -> (size, sha256), generated cell modules included."""
    module_text: str | None
    """The generated cell module(s); None for a run that is not a notebook cell."""
    inputs: dict[str, tuple[int, str]] | None
    """Input name -> (size, sha256 of its pickled bytes); None when unknown."""
    spec: dict[str, Any]


def diff_runs(a: str | Run, b: str | Run) -> RunDiff:
    """Compare two runs (ids, unique id prefixes or handles)."""
    warnings: list[str] = []
    run_a = a if isinstance(a, Run) else Run.from_history(a)
    run_b = b if isinstance(b, Run) else Run.from_history(b)
    return compare(snapshot(run_a, warnings), snapshot(run_b, warnings), warnings)


def since_previous(run_id: str) -> tuple[str, str] | None:
    """(the previous run's id, what changed since it) for a run from a notebook cell, like the
    cell's own status line; None for a cell's first run, when nothing changed, or when either
    bundle can no longer be read."""
    before = history.previous(history.get(run_id))
    if before is None:
        return None
    warnings: list[str] = []
    try:
        snaps = [snapshot(Run.from_history(r), warnings) for r in (before.id, run_id)]
    except FlyteJupyterError:
        return None
    if any(s.digest and not s.files for s in snaps):
        return None  # a bundle gone from the store: every file would show as added
    diff = compare(*snaps)
    return None if diff.same_code and not diff.inputs else (before.id, diff.short())


def snapshot(run: Run, warnings: list[str]) -> Snapshot:
    """A stored run's snapshot: its bundle from the local archive cache or the store, its
    inputs.pkl from the store. What is gone is added to `warnings`."""
    members = _bundle_files(run, warnings)
    return Snapshot(
        run.id,
        run.spec.digest,
        run.spec.version,
        {p: (m.size, m.sha256) for p, m in members.items()},
        _cell_module(members),
        _inputs(run, warnings),
        run.spec.to_json(),
    )


def compare(a: Snapshot, b: Snapshot, warnings: list[str] | None = None) -> RunDiff:
    """What differs from snapshot `a` to snapshot `b`."""
    return RunDiff(
        a.run_id,
        b.run_id,
        a.digest,
        b.digest,
        a.version,
        b.version,
        files=_file_changes(a.files, b.files),
        definitions=_definition_changes(a.module_text, b.module_text),
        inputs=_changes(a.inputs, b.inputs)
        if a.inputs is not None and b.inputs is not None
        else [],
        settings=_setting_changes(a.spec, b.spec),
        warnings=list(warnings or []),
    )


@dataclass(frozen=True)
class _Member:
    size: int
    sha256: str
    mode: int
    text: str | None
    """The text of a generated cell module; None for every other file."""


def _bundle_files(run: Run, warnings: list[str]) -> dict[str, _Member]:
    """The run's bundle as path -> member, from the local archive cache or else the store."""
    digest = run.spec.digest
    if not digest:
        return {}
    hex_digest = digest.split(":", 1)[-1]
    cached = cache_dir() / "archives" / f"{hex_digest}.tar.gz"
    if cached.is_file():
        members = _read_archive(cached)
    else:
        url = run.spec.bundle_url or run.store.bundle_url(digest)
        if not run.store.exists(url):
            warnings.append(f"the bundle of run {run.id} is gone from {run.store.url}")
            return {}
        with tempfile.TemporaryDirectory(prefix="flyte-jupyter-diff-") as tmp:
            local = Path(tmp) / "bundle.tar.gz"
            run.store.get_file(url, str(local))
            members = _read_archive(local)
    entries = [ManifestEntry(p, m.mode, m.size, m.sha256) for p, m in members.items()]
    if compute_digest(entries) != digest:
        warnings.append(
            f"the bundle of run {run.id} does not match its digest {digest[:19]}…: it was "
            "changed after the run; the files shown are what the archive holds now"
        )
    return members


def _read_archive(archive: Path) -> dict[str, _Member]:
    """List and hash the regular files of a bundle archive (streamed, nothing extracted)."""
    members: dict[str, _Member] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                handle = tar.extractfile(info)
                if handle is None:
                    continue
                sha = hashlib.sha256()
                keep = info.name.startswith(_CELL_PREFIX) and info.size <= _MAX_MODULE_TEXT
                kept = bytearray()
                while chunk := handle.read(1024 * 1024):
                    sha.update(chunk)
                    if keep:
                        kept += chunk
                text = kept.decode("utf-8", errors="replace") if keep else None
                members[info.name] = _Member(info.size, sha.hexdigest(), info.mode, text)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise RunError(f"cannot read bundle archive {archive}: {exc}") from exc
    return members


def _file_changes(a: dict[str, tuple[int, str]], b: dict[str, tuple[int, str]]) -> list[Change]:
    """Added, removed and changed files; generated cell modules (named by their own hash)
    are compared as definitions instead."""
    return _changes(
        {p: v for p, v in a.items() if not p.startswith(_CELL_PREFIX)},
        {p: v for p, v in b.items() if not p.startswith(_CELL_PREFIX)},
    )


def _changes(a: dict[str, tuple[int, str]], b: dict[str, tuple[int, str]]) -> list[Change]:
    """Names whose (size, sha256) differ, or that only one side has."""
    out = []
    for name in sorted(set(a) | set(b)):
        before, after = a.get(name), b.get(name)
        if before != after:
            out.append(Change(name, before[0] if before else None, after[0] if after else None))
    return out


def _cell_module(files: dict[str, _Member]) -> str | None:
    """The generated cell module(s) of a cell run's bundle, as one text; None otherwise."""
    texts = [m.text or "" for p, m in sorted(files.items()) if p.startswith(_CELL_PREFIX)]
    return "\n".join(texts) if texts else None


def _definition_changes(a: str | None, b: str | None) -> dict[str, list[str]]:
    if a is None or b is None:
        return {}
    defs_a, defs_b = _definitions(a), _definitions(b)
    changes = {
        "added": set(defs_b) - set(defs_a),
        "removed": set(defs_a) - set(defs_b),
        "changed": {n for n in set(defs_a) & set(defs_b) if defs_a[n] != defs_b[n]},
    }
    shown = {
        kind: sorted(_CELL_NAMES.get(n, n) for n in names if _CELL_NAMES.get(n, n))
        for kind, names in changes.items()
    }
    return {kind: names for kind, names in shown.items() if names}


def _definitions(text: str) -> dict[str, str]:
    """Top-level name -> the source of the statements that bind it (normalised by the AST,
    so a moved or reformatted definition is not a change)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {"<module>": text}
    out: dict[str, list[str]] = {}
    for node in tree.body:
        source = ast.unparse(node)
        for name in _names(node) or ["<module>"]:
            out.setdefault(name, []).append(source)
    return {name: "\n".join(sources) for name, sources in out.items()}


def _names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [a.asname or a.name.split(".")[0] for a in node.names]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _inputs(run: Run, warnings: list[str]) -> dict[str, tuple[int, str]] | None:
    """Size and sha256 of the run's inputs: a cell run's values one by one (from inputs.json,
    or, for runs from older clients, each pickled on its own inside inputs.pkl), else
    inputs.pkl as a whole. Never unpickled."""
    digests = run.input_digests()
    if digests is not None:
        return digests
    try:
        data = run.store.get_bytes(run.spec.inputs_url)
    except FileNotFoundError:
        warnings.append(f"the inputs of run {run.id} are gone from {run.store.url}")
        return None
    values = _cell_values(data)
    if values is not None:
        return values
    return {protocol.INPUTS: (len(data), hashlib.sha256(data).hexdigest())}


def _cell_values(data: bytes) -> dict[str, tuple[int, str]] | None:
    """A cell run's {"module": ..., "values": {name: pickled bytes}} read by walking the
    pickle's opcodes (pickletools parses, it does not execute): each name string followed by
    a bytes object after the "values" key. None when the pickle is not shaped like that."""
    try:
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    except (ValueError, EOFError):
        return None
    ops = [(name, arg) for name, arg in ops if name not in _MEMO_OPS]
    strings = [i for i, (name, arg) in enumerate(ops) if arg == "values" and "UNICODE" in name]
    if not strings:
        return None
    values: dict[str, tuple[int, str]] = {}
    for (name, key), (next_name, blob) in itertools.pairwise(ops[strings[0] + 1 :]):
        if "UNICODE" in name and "BYTES" in next_name and isinstance(blob, bytes):
            values[key] = (len(blob), hashlib.sha256(blob).hexdigest())
    return values


def _setting_changes(a: dict[str, Any], b: dict[str, Any]) -> list[SettingChange]:
    """Spec fields that differ, the client environment by distribution."""
    changes = []
    for key in sorted(set(a) | set(b)):
        if key in _SAME_BY_DESIGN:
            continue
        before, after = a.get(key), b.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changes += _setting_changes_nested(key, before, after)
        elif before != after:
            changes.append(SettingChange(key, before, after))
    return changes


def _setting_changes_nested(prefix: str, a: dict[str, Any], b: dict[str, Any]) -> list[Any]:
    out = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key), b.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            out += _setting_changes_nested(f"{prefix}.{key}", before, after)
        elif before != after:
            out.append(SettingChange(f"{prefix}.{key}", before, after))
    return out


def render(diff: RunDiff) -> str:
    """The diff as text for the terminal."""
    lines = [f"runs {diff.a} -> {diff.b}"]
    if diff.same_code:
        lines.append(f"bundle: same ({_short(diff.digest_a)}), version {diff.version_b}")
    else:
        lines.append(
            f"bundle: {_short(diff.digest_a)} -> {_short(diff.digest_b)}, "
            f"version {diff.version_a} -> {diff.version_b}"
        )
    if diff.files:
        lines.append(f"files: {_differ(diff.files, 'file')}")
        lines += _change_lines(diff.files)
    for kind in ("added", "removed", "changed"):
        names = diff.definitions.get(kind, [])
        if names:
            lines.append(f"notebook definitions {kind}: " + ", ".join(names))
    if diff.inputs:
        lines.append(f"inputs: {_differ(diff.inputs, 'input')} (compared by pickled bytes)")
        lines += _change_lines(diff.inputs)
    for change in diff.settings:
        lines.append(f"setting {change.key}: {change.before!r} -> {change.after!r}")
    if len(lines) == 2 and diff.same_code:
        lines.append("nothing else differs")
    lines += [f"warning: {w}" for w in diff.warnings]
    return "\n".join(lines)


def _change_lines(changes: list[Change]) -> list[str]:
    lines = []
    for c in changes:
        if c.before is None:
            lines.append(f"  + {c.name} ({human_size(c.after or 0)})")
        elif c.after is None:
            lines.append(f"  - {c.name} ({human_size(c.before)})")
        else:
            lines.append(f"  ~ {c.name} ({human_size(c.before)} -> {human_size(c.after)})")
    return lines


def _short(digest: str | None) -> str:
    return f"{digest[:19]}…" if digest else "none (code from the image)"


def _count(items: list[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _differ(items: list[Any], noun: str) -> str:
    return f"{_count(items, noun)} {'differs' if len(items) == 1 else 'differ'}"


def _count_names(noun: str, names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    return f"{_count(names, noun)} ({shown})"
