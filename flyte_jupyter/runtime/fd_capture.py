"""Keep what a run's child processes and C code print, not only what Python code prints.

Python-level writes reach the run's log through the runtime's tee on sys.stdout/sys.stderr.
Anything written to file descriptors 1 and 2 directly (a `subprocess.run`, a C library,
`os.write(1, ...)`) never passes through it, so it was shown live and then missing from
`runs logs`. Here fds 1 and 2 become pipes: a thread per pipe passes what arrives on to where
the fd pointed before (live output unchanged) and appends it to the log. The tee writes
straight to duplicates of the original fds, so Python output is logged once, in order.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import threading
from typing import Any

_CHUNK = 1 << 16


class FdCapture:
    """fds 1 and 2 through pipes into `log` (text) until stop(); `lock` guards the log."""

    def __init__(self, log: Any, lock: threading.Lock):
        self.log, self.lock = log, lock
        self.saved: dict[int, int] = {}
        self.threads: list[threading.Thread] = []
        for fd in (1, 2):
            self.saved[fd] = os.dup(fd)
            read, write = os.pipe()
            os.dup2(write, fd)
            os.close(write)
            thread = threading.Thread(
                target=self._pump, args=(read, self.saved[fd]), daemon=True, name=f"fd{fd}"
            )
            thread.start()
            self.threads.append(thread)

    def direct(self, stream: Any, fd: int) -> io.TextIOWrapper:
        """A text stream like `stream` that writes to where `fd` pointed before the capture
        (Python output goes to the log through the tee, not through the pipe)."""
        return open(  # closing it leaves the fd open (closefd=False)
            self.saved[fd],
            "w",
            encoding=getattr(stream, "encoding", None) or "utf-8",
            errors=getattr(stream, "errors", None) or "backslashreplace",
            closefd=False,
        )

    def _pump(self, read: int, out: int) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(_CHUNK):
                with contextlib.suppress(OSError):  # the live destination went away
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
                with self.lock:
                    self.log.write(decoder.decode(chunk))
        with self.lock:
            self.log.write(decoder.decode(b"", final=True))

    def stop(self, wait: float = 2.0) -> None:
        """Point fds 1 and 2 back; what is still in the pipes is logged, waiting at most
        `wait` seconds for child processes that still hold them. The duplicates stay open:
        a stream the run's code kept may still write to them (the process ends soon)."""
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
        for thread in self.threads:
            thread.join(wait)


def start(log: Any, lock: threading.Lock, streams: tuple[Any, Any]) -> FdCapture | None:
    """Capture fds 1 and 2 when the streams are the process's own (else None: e.g. the
    runtime called in-process with Python-level streams only)."""
    try:
        if [stream.fileno() for stream in streams] != [1, 2]:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    return FdCapture(log, lock)
