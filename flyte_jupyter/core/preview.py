"""Human-readable previews of what a bundle ships."""

from __future__ import annotations

from .bundle import Bundle
from .sizes import human_size


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell."""
    cells = [header, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def render_tree(bundle: Bundle) -> str:
    """The bundle as a directory tree with each file's size and reason, then a summary."""
    sel = bundle.selection
    reasons = {f.path: f.reason for f in sel.files}
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
    lines = [f"{sel.root_dir}  (copy_style {sel.copy_style})"]
    lines += [f"{name.ljust(width)}  {size:>9}  {reason}".rstrip() for name, size, reason in rows]
    lines.append(
        f"{len(bundle.entries)} files, {human_size(bundle.total_bytes)}  digest {bundle.digest}"
        f"  version {bundle.version}"
    )
    if bundle.archive:
        lines.append(f"archive: {bundle.archive}")
    lines += [f"warning: {w}" for w in sel.warnings]
    return "\n".join(lines)


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
