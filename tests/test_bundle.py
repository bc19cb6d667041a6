"""The bundle contract: deterministic bytes, manifest digest, tar headers, caching."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import write_tree

from flyte_jupyter.core import bundle as bundle_mod
from flyte_jupyter.core.bundle import (
    ARCHIVE_MTIME,
    Bundle,
    build_bundle,
)
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.runtime.manifest import ManifestEntry, compute_digest, manifest_bytes

FILES = {
    "pyproject.toml": "[project]\nname='demo'\n",
    "app.py": "from pkg import mod\nprint(mod.VALUE)\n",
    "pkg/__init__.py": "",
    "pkg/mod.py": "VALUE = 42\n",
    "pkg/sub/deep.py": "X = 'deep'\n",
    "data/table.csv": "a,b\n1,2\n",
    "run.sh": "#!/bin/sh\necho hi\n",
    "naïve/ünïcode.py": "Y = 1\n",
    "long/" + "d" * 90 + "/" + "f" * 60 + ".py": "Z = 1\n",
}


def age(root: Path, seconds: float = 3600) -> None:
    """Make every file look edited a while ago, as in a real checkout (fresh files are
    deliberately not trusted by the stat cache)."""
    when = time.time() - seconds
    for path in root.rglob("*"):
        os.utime(path, (when, when), follow_symlinks=False)


def build_all(root: Path, **kwargs) -> Bundle:
    return build_bundle(select_files(root, copy_style="all"), **kwargs)


def make_copy(base: Path, umask: int, reverse: bool, seed: int) -> Path:
    """The same files, written in a different order, with a different umask and mtimes."""
    old = os.umask(umask)
    try:
        items = sorted(FILES.items(), reverse=reverse)
        root = write_tree(base, dict(items))
        os.chmod(root / "run.sh", 0o700 if umask == 0o077 else 0o775)
    finally:
        os.umask(old)
    rng = random.Random(seed)
    for path in root.rglob("*"):
        t = rng.uniform(1e9, 1.7e9)
        os.utime(path, (t, t))
    return root


def test_same_code_same_digest_and_identical_bytes(tmp_path, monkeypatch):
    a = make_copy(tmp_path / "machine-a" / "checkout", 0o022, False, 1)
    b = make_copy(tmp_path / "elsewhere" / "b" / "project", 0o077, True, 2)
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(tmp_path / "cache-a"))
    first = build_all(a)
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(tmp_path / "cache-b"))
    second = build_all(b)
    assert first.digest == second.digest
    assert first.archive != second.archive
    assert first.archive.read_bytes() == second.archive.read_bytes()
    assert first.digest.startswith("sha256:") and len(first.hex) == 64


def test_tar_headers_and_gzip_header_are_fixed(tree):
    root = tree(FILES)
    os.chmod(root / "run.sh", 0o755)
    built = build_all(root)
    raw = built.archive.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no FNAME/FEXTRA/FCOMMENT flags
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
    with tarfile.open(built.archive, "r:gz") as tar:
        assert tar.pax_headers == {}
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names) == sorted(FILES)
        for m in members:
            assert m.isreg()
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
            assert m.mtime == ARCHIVE_MTIME
            assert m.pax_headers == {}
            assert m.mode == (0o755 if m.name == "run.sh" else 0o644)
            assert tar.extractfile(m).read() == (root / m.name).read_bytes()
    # the archive is a plain tar inside gzip: the whole stream decompresses
    inner = gzip.decompress(raw)
    assert len(inner) % tarfile.RECORDSIZE == 0


def test_digest_is_the_manifest_recomputed_from_archive_members(tree):
    built = build_all(tree(FILES))
    entries = []
    with tarfile.open(built.archive, "r:gz") as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            entries.append(ManifestEntry(m.name, m.mode, m.size, hashlib.sha256(data).hexdigest()))
    assert compute_digest(entries) == built.digest
    assert [e.path for e in built.entries] == sorted(FILES)


def test_standard_tools_list_and_extract_it(tree, tmp_path):
    built = build_all(tree(FILES))
    listing = subprocess.run(
        ["tar", "-tzvf", str(built.archive)], capture_output=True, text=True, check=True
    ).stdout
    assert "pkg/mod.py" in listing and "0/0" in listing and "1981-01-01" in listing
    assert "naïve/ünïcode.py" in listing
    py_listing = subprocess.run(
        [sys.executable, "-m", "tarfile", "-l", str(built.archive)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "long/" + "d" * 90 in py_listing
    out = tmp_path / "extracted"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(built.archive), "-C", str(out)], check=True)
    # paths are relative to root_dir, so the extract dir on sys.path makes imports work
    run = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, '.'); import app"],
        cwd=out,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == "42"


def test_warm_rebuild_reads_no_file_contents_and_reuses_the_archive(tree, monkeypatch):
    root = tree(FILES)
    age(root)
    first = build_all(root)
    stamp = first.archive.stat().st_ino
    reads: list[str] = []
    real_read = bundle_mod.read_bytes
    monkeypatch.setattr(bundle_mod, "read_bytes", lambda p, d: reads.append(d) or real_read(p, d))
    again = build_all(root)
    assert reads == []
    assert again.digest == first.digest
    assert again.archive == first.archive and again.archive.stat().st_ino == stamp


def test_cache_lookup_keeps_sibling_trees_and_outside_links_apart(tree, monkeypatch, tmp_path):
    """Cached hashes are fetched by the folder the files share: trees named alike ("proj",
    "proj2", "proj-old") never answer for each other, and a file linked in from outside the
    tree is still found."""
    outside = tree({"shared.py": "S = 1\n"}, name="elsewhere")
    roots = {
        name: tree({**FILES, "pkg/mod.py": f"VALUE = '{name}'\n"}, name=name)
        for name in ("proj", "proj2", "proj-old")
    }
    (roots["proj"] / "linked.py").symlink_to(outside / "shared.py")
    for root in [outside, *roots.values()]:
        age(root)
    first = {name: build_all(root) for name, root in roots.items()}
    reads: list[str] = []
    real_read = bundle_mod.read_bytes
    monkeypatch.setattr(bundle_mod, "read_bytes", lambda p, d: reads.append(d) or real_read(p, d))
    again = {name: build_all(root) for name, root in roots.items()}
    print("files read on the warm rebuilds:", len(reads))
    assert reads == []
    assert {n: b.digest for n, b in again.items()} == {n: b.digest for n, b in first.items()}
    assert len({b.digest for b in again.values()}) == 3
    changed = roots["proj2"] / "pkg/mod.py"
    changed.write_text("VALUE = 'changed'\n")
    os.utime(changed, (time.time() - 60, time.time() - 60))
    build_all(roots["proj"])
    assert reads == []  # proj's lookup was not confused by proj2's new stat
    assert build_all(roots["proj2"]).digest != first["proj2"].digest
    assert reads == ["pkg/mod.py"]


def test_one_file_change_rereads_only_that_file_and_matches_a_cold_build(
    tree, monkeypatch, tmp_path
):
    root = tree(FILES)
    age(root)
    first = build_all(root)
    (root / "pkg/mod.py").write_text("VALUE = 43\n")
    reads: list[str] = []
    real_read = bundle_mod.read_bytes
    monkeypatch.setattr(bundle_mod, "read_bytes", lambda p, d: reads.append(d) or real_read(p, d))
    second = build_all(root)
    assert reads == ["pkg/mod.py"]
    assert second.digest != first.digest
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(tmp_path / "fresh-cache"))
    cold = build_all(root)
    assert cold.digest == second.digest
    assert cold.archive.read_bytes() == second.archive.read_bytes()


def test_damaged_cached_archive_is_not_trusted(tree, monkeypatch, tmp_path):
    root = tree(FILES)
    age(root)
    first = build_all(root)
    good = first.archive.read_bytes()
    first.archive.write_bytes(b"garbage" * 10)  # someone clobbered the cache
    (root / "pkg/mod.py").write_text("VALUE = 44\n")
    second = build_all(root)
    with tarfile.open(second.archive, "r:gz") as tar:
        assert tar.extractfile("pkg/mod.py").read() == b"VALUE = 44\n"
    monkeypatch.setenv("FLYTE_JUPYTER_CACHE_DIR", str(tmp_path / "fresh"))
    assert build_all(root).archive.read_bytes() == second.archive.read_bytes()
    assert good != second.archive.read_bytes()


def test_file_edited_within_the_same_second_is_not_served_stale(tree):
    root = tree({"a.py": "A = 1\n"})
    first = build_all(root)
    st = (root / "a.py").stat()
    (root / "a.py").write_text("A = 2\n")  # same size, possibly same mtime tick
    os.utime(root / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    second = build_all(root)
    assert second.digest != first.digest


def test_dry_run_output_copy_and_empty_bundle(tree, tmp_path):
    root = tree(FILES)
    dry = build_all(root, dry_run=True)
    assert dry.archive is None
    out = tmp_path / "out" / "code.tar.gz"
    real = build_all(root, output=out)
    assert real.digest == dry.digest
    assert real.archive == out and out.is_file()
    empty = build_bundle(select_files(root, copy_style="none", version="v1.0.0"))
    assert empty.archive is None and empty.entries == []
    assert empty.version == "v1.0.0"
    assert empty.digest == compute_digest([])
    assert real.version == real.hex[:16]


def test_json_document_matches_the_cli_contract(tree):
    built = build_all(tree(FILES))
    doc = built.to_json()
    assert set(doc) >= {
        "digest",
        "root_dir",
        "copy_style",
        "files",
        "total_bytes",
        "archive",
        "excluded_secrets",
        "warnings",
    }
    first = doc["files"][0]
    assert set(first) == {"path", "size", "mode", "sha256", "reason"}
    assert doc["total_bytes"] == sum(f["size"] for f in doc["files"])


def test_archive_is_written_atomically(tree, monkeypatch):
    root = tree(FILES)

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod, "end_of_archive", explode)
    with pytest.raises(KeyboardInterrupt):
        build_all(root)
    archives = Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "archives"
    assert list(archives.iterdir()) == []


def test_gzip_stream_reads_with_stdlib_gzip(tree):
    built = build_all(tree(FILES))
    with gzip.open(built.archive) as f, tarfile.open(fileobj=io.BytesIO(f.read())) as tar:
        assert len(tar.getnames()) == len(FILES)


def test_manifest_is_canonical_json():
    entries = [
        ManifestEntry('b/ü "q"\\.py', 0o755, 3, "ab" * 32),
        ManifestEntry("a.py", 0o644, 0, "cd" * 32),
        ManifestEntry("c.py", 0o600, 1, "ef" * 32),  # no bundle holds it; a runtime may read one
    ]
    doc = {"format": 1, "files": [e.as_json() for e in sorted(entries, key=lambda e: e.path)]}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert manifest_bytes(entries) == canonical.encode()


def test_concurrent_builds_share_one_cache_safely(tree):
    root = tree(FILES)
    age(root)
    script = (
        "import sys, json\n"
        "from flyte_jupyter.core.selection import select_files\n"
        "from flyte_jupyter.core.bundle import build_bundle\n"
        "b = build_bundle(select_files(sys.argv[1], copy_style='all'))\n"
        "print(json.dumps([b.digest, b.archive.read_bytes().hex()]))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({tuple(o) for o in outputs}) == 1
    assert build_all(root).digest == outputs[0][0]
