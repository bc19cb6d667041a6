"""A run's output in the notebook at the speed of a plain cell.

ipykernel sends one message per `flush()`, and a flush from the main thread waits for the
kernel's I/O thread: flushing every remote line made 200,000 lines take a minute. Here lines
are written as they come and flushed in chunks: at once when nothing was flushed for
`interval` seconds (so the first line after a pause shows immediately), after `max_chars`
of text, and whenever the stream changes, so stdout and stderr keep the order the run gave
them. What stays buffered is sent by ipykernel's own flush timer, as in a plain cell.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TextIO

from ..core.executors.registry import LogLine


class CoalescedOutput:
    """Writes LogLines to `streams` ({"stdout": ..., "stderr": ...}), flushing in chunks."""

    def __init__(
        self,
        streams: dict[str, TextIO],
        interval: float = 0.05,
        max_chars: int = 64 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.streams, self.clock = streams, clock
        self.interval, self.max_chars = interval, max_chars
        self.current: str | None = None
        self.pending = 0
        self.last_flush = float("-inf")

    def write(self, line: LogLine) -> None:
        if line.stream != self.current:
            self.flush()  # the other stream's text goes out first: order is kept
            self.current = line.stream
        self.streams[line.stream].write(line.text)
        self.pending += len(line.text)
        if self.pending >= self.max_chars or self.clock() - self.last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.current is not None and self.pending:
            self.streams[self.current].flush()
            self.last_flush = self.clock()
        self.pending = 0

    def copy(self, lines: Iterable[LogLine]) -> None:
        """Write every line, then flush what is left. What was printed before (the run's
        banner) goes out first."""
        for stream in self.streams.values():
            stream.flush()
        try:
            for line in lines:
                self.write(line)
        finally:
            self.flush()
