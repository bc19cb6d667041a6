"""A `%%flyte_run` cell's output reaches the notebook in chunks (not one kernel message per
line), in the order the run wrote it across stdout and stderr, and live: a line printed before
a pause shows during the pause."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tree
from kernel import Kernel

from flyte_jupyter.core.executors.registry import LogLine
from flyte_jupyter.kernel.output import CoalescedOutput


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    root = write_tree(tmp_path / "nb", {"pyproject.toml": "[project]\nname='out'\n"})
    k = Kernel(
        root,
        env={
            "FLYTE_JUPYTER_CACHE_DIR": str(tmp_path / "cache"),
            "FLYTE_JUPYTER_DATA_DIR": str(tmp_path / "data"),
        },
    )
    try:
        k.ok("%load_ext flyte_jupyter")
        yield k
    finally:
        k.shutdown()


def stream_messages(kernel: Kernel, code: str, timeout: float = 180) -> list[tuple]:
    """(arrival time, stream name, text) of each stream message the cell sends."""
    msg_id = kernel.client.execute(code, allow_stdin=False)
    messages = []
    while True:
        msg = kernel.client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        if kind == "stream":
            messages.append((time.monotonic(), content["name"], content["text"]))
        if kind == "status" and content["execution_state"] == "idle":
            return messages


def test_interleaved_output_keeps_order_in_few_messages(kernel: Kernel):
    blocks, per_block = 6, 2000
    code = (
        "%%flyte_run\n"
        "import sys, time\n"
        f"for block in range({blocks}):\n"
        "    stream = sys.stdout if block % 2 == 0 else sys.stderr\n"
        f"    for i in range({per_block}):\n"
        "        print(f'b{block} l{i}', file=stream)\n"
        "    time.sleep(0.5)\n"
    )
    messages = stream_messages(kernel, code)
    got = [
        (name, line)
        for _, name, text in messages
        for line in text.splitlines()
        if line.startswith("b") and " l" in line
    ]
    expected = [
        ("stdout" if block % 2 == 0 else "stderr", f"b{block} l{i}")
        for block in range(blocks)
        for i in range(per_block)
    ]
    carrying = sum(1 for _, _, text in messages if text.startswith("b") or "\nb" in text)
    print(f"lines: {len(got)} of {len(expected)}; kernel messages carrying them: {carrying}")
    assert got == expected
    assert carrying <= len(expected) // 20  # one message per line before coalescing


def test_a_line_before_a_pause_shows_during_the_pause(kernel: Kernel):
    code = "%%flyte_run\nimport time\nprint('before the pause')\ntime.sleep(4)\nprint('after it')\n"
    messages = stream_messages(kernel, code)
    before = next(t for t, _, text in messages if "before the pause" in text)
    after = next(t for t, _, text in messages if "after it" in text)
    print(f"'before the pause' arrived {after - before:.2f} s before 'after it'")
    assert after - before >= 2.5


class _Recorder(io.StringIO):
    """A stream that notes each write and flush, in one shared list."""

    def __init__(self, name: str, events: list[tuple[str, str, str]]):
        super().__init__()
        self.name, self.events = name, events

    def write(self, text: str) -> int:
        self.events.append(("write", self.name, text))
        return len(text)

    def flush(self) -> None:
        self.events.append(("flush", self.name, ""))


def test_coalescing_flushes_before_switching_streams_and_by_size():
    events: list[tuple[str, str, str]] = []
    streams = {n: _Recorder(n, events) for n in ("stdout", "stderr")}
    now = [0.0]
    output = CoalescedOutput(streams, interval=0.05, max_chars=1000, clock=lambda: now[0])
    lines = [LogLine("stdout", f"out {i}\n") for i in range(500)]
    lines += [LogLine("stderr", "err\n"), LogLine("stdout", "last\n")]
    output.copy(lines)
    flushes = [e for e in events if e[0] == "flush"]
    print(f"lines: {len(lines)}, flushes: {len(flushes)}")
    # the first line flushes at once (nothing flushed yet), then every ~1000 chars
    assert events[2:4] == [("write", "stdout", "out 0\n"), ("flush", "stdout", "")]
    assert 3 < len(flushes) < 20
    # every write of one stream is flushed before the other stream writes
    pending: str | None = None
    for kind, name, _ in events:
        if kind == "write":
            assert pending in (None, name), "a stream wrote while the other had unflushed text"
            pending = name
        elif name == pending:
            pending = None
    assert pending is None
    # a line after a pause longer than the interval is flushed at once
    now[0] = 10.0
    events.clear()
    output.write(LogLine("stdout", "after a pause\n"))
    assert events == [("write", "stdout", "after a pause\n"), ("flush", "stdout", "")]
