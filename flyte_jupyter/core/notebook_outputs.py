"""Notebooks that ship as files ship without their outputs: a token printed in a cell, a
dataframe of customer rows or a plot must not leave the machine because the `.ipynb` sits
next to the code. The stripped bytes are what is hashed and shipped, so they are
deterministic: same cells, same bytes, whatever was executed or displayed."""

from __future__ import annotations

from typing import Any


def strip_outputs(data: bytes) -> bytes | None:
    """The notebook without outputs, execution counts, execution timings or widget state;
    None when `data` is not a notebook nbformat can read."""
    import nbformat  # lazy: selection of plain Python projects never needs it

    try:
        book = nbformat.reads(data.decode("utf-8"), as_version=4, capture_validation_error={})
    except Exception:  # any content at all can sit in a file named .ipynb
        return None
    for cell in book.get("cells", []):
        if not isinstance(cell, dict):
            return None
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        _drop(cell.get("metadata"), "execution")
    _drop(book.get("metadata"), "widgets")
    text = nbformat.writes(book, version=4, capture_validation_error={})
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def _drop(metadata: Any, key: str) -> None:
    if isinstance(metadata, dict):
        metadata.pop(key, None)
