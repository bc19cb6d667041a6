"""Warm workers started by a test stop with it: the suite leaves no worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flyte_jupyter.core import workers


@pytest.fixture(autouse=True)
def stopped_workers(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Workers of the test's cache dir are stopped at teardown; any started elsewhere (a
    kernel or CLI with another cache dir) end after a short idle time."""
    monkeypatch.setenv(workers.IDLE_ENV, "30")
    yield
    workers.stop_workers()
