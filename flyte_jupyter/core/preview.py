"""Human-readable previews of what a bundle ships."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sizes import human_size

if TYPE_CHECKING:
    from .bundle import Bundle


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


TREE_LIMIT = 200
"""Bundles with more files than this list their top-level folders instead of every file."""


def render_tree(bundle: Bundle, limit: int | None = TREE_LIMIT) -> str:
    """The bundle as a directory tree with each file's size and reason, then a summary. Past
    `limit` files (None: no limit) the tree shows top-level folders with their file counts
    and sizes: twenty thousand lines help nobody read a terminal or a notebook output."""
    sel = bundle.selection
    lines = [f"{sel.root_dir}  (copy_style {sel.copy_style})"]
    if limit is not None and len(bundle.entries) > limit:
        lines += _folder_summary(bundle)
    else:
        lines += _file_tree(bundle)
    lines.append(
        f"{len(bundle.entries)} files, {human_size(bundle.total_bytes)}  digest {bundle.digest}"
        f"  version {bundle.version}"
    )
    if bundle.archive:
        lines.append(f"archive: {bundle.archive}")
    lines += [f"warning: {w}" for w in sel.warnings]
    return "\n".join(lines)


def _file_tree(bundle: Bundle) -> list[str]:
    reasons = {f.path: f.reason for f in bundle.selection.files}
    tree: dict = {}
    for entry in bundle.entries:
        *dirs, name = entry.path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d + "/", {})
        node[name] = (human_size(entry.size), reasons[entry.path])
    rows: list[tuple[str, str, str]] = []
    _walk(tree, "", rows)
    width = max((len(r[0]) for r in rows), default=0)
    return [f"{name.ljust(width)}  {size:>9}  {reason}".rstrip() for name, size, reason in rows]


def _folder_summary(bundle: Bundle) -> list[str]:
    """One row per top-level folder or file: how many files, how many bytes."""
    groups: dict[str, list[int]] = {}
    for entry in bundle.entries:
        top, slash, _ = entry.path.partition("/")
        count_size = groups.setdefault(top + slash, [0, 0])
        count_size[0] += 1
        count_size[1] += entry.size
    rows = [
        (name, human_size(size), f"{count} files" if name.endswith("/") else "")
        for name, (count, size) in sorted(groups.items())
    ]
    width = max(len(r[0]) for r in rows)
    return [f"{name.ljust(width)}  {size:>9}  {count}".rstrip() for name, size, count in rows] + [
        f"({len(bundle.entries)} files: more than {TREE_LIMIT}, shown by top-level folder; "
        "--all-files lists each one, --json gives them with their hashes)"
    ]


def _walk(node: dict, indent: str, rows: list[tuple[str, str, str]]) -> None:
    names = sorted(node)
    for i, name in enumerate(names):
        last = i == len(names) - 1
        child = node[name]
        branch = indent + ("└── " if last else "├── ") + name
        if isinstance(child, dict):
            rows.append((branch, "", ""))
            _walk(child, indent + ("    " if last else "│   "), rows)
        else:
            rows.append((branch, *child))
