"""The bundle manifest and digest: the identity of a bundle, shared by builder and runtime."""

from __future__ import annotations

from json.encoder import encode_basestring
from operator import itemgetter
from typing import NamedTuple

MANIFEST_FORMAT = 1


class ManifestEntry(NamedTuple):
    """One file of a bundle. A named tuple: a warm build makes tens of thousands at once."""

    path: str
    mode: int
    size: int
    sha256: str

    def as_json(self) -> dict:
        mode = f"{self.mode:04o}"
        return {"path": self.path, "mode": mode, "size": self.size, "sha256": self.sha256}


_MODES = {0o644: "0644", 0o755: "0755"}


def manifest_bytes(entries: list[ManifestEntry]) -> bytes:
    """Canonical JSON of a manifest: sorted entries, sorted keys, no whitespace.

    Equal to `json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`,
    written out by hand because it is on the path of every warm rebuild."""
    dump = encode_basestring  # what json.dumps(..., ensure_ascii=False) uses for a str
    modes = _MODES  # the two a bundle holds, formatted once (a third is formatted as it comes)
    files = ",".join(
        [
            f'{{"mode":"{modes.get(mode) or format(mode, "04o")}","path":{dump(path)},'
            f'"sha256":"{sha256}","size":{size}}}'
            for path, mode, size, sha256 in sorted(entries, key=itemgetter(0))
        ]
    )
    return f'{{"files":[{files}],"format":{MANIFEST_FORMAT}}}'.encode()


def compute_digest(entries: list[ManifestEntry]) -> str:
    import hashlib  # here: a warm build whose tree did not change computes no digest

    return "sha256:" + hashlib.sha256(manifest_bytes(entries)).hexdigest()
