"""Loading the example's data and settings by path relative to the project root."""

import csv
import json
from pathlib import Path


def load_rows(path: str = "data/sales.csv") -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def load_settings(path: str = "config/settings.json") -> dict:
    return json.loads(Path(path).read_text())
