"""A real ipykernel for tests, driven through jupyter_client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class Reply:
    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    """text/plain of the execute_result (the cell's Out)."""
    displays: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    """ename, evalue, traceback of an error output."""

    @property
    def error_text(self) -> str:
        if not self.error:
            return ""
        return "\n".join([self.error["ename"], self.error["evalue"], *self.error["traceback"]])


class Kernel:
    """One kernel process, its working directory and environment chosen by the test."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None):
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env={**os.environ, **(env or {})})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 120) -> Reply:
        msg_id = self.client.execute(code, allow_stdin=False)
        reply = Reply()
        while True:
            try:
                msg = self.client.get_iopub_msg(timeout=timeout)
            except Empty as exc:
                raise TimeoutError(f"no kernel output for {timeout}s running:\n{code}") from exc
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    reply.stdout += content["text"]
                else:
                    reply.stderr += content["text"]
            elif kind == "execute_result":
                reply.result = content["data"].get("text/plain")
            elif kind == "display_data":
                reply.displays.append(content["data"])
            elif kind == "error":
                reply.error = content
            elif kind == "status" and content["execution_state"] == "idle":
                return reply

    def ok(self, code: str, timeout: float = 120) -> Reply:
        """Execute and fail the test with the kernel's traceback if the cell raised."""
        reply = self.execute(code, timeout)
        assert reply.error is None, reply.error_text
        return reply

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@contextmanager
def extension_kernel(cwd: Path, env: dict[str, str] | None = None) -> Iterator[Kernel]:
    """A kernel in `cwd` with `%load_ext flyte_jupyter` run, shut down on the way out."""
    kernel = Kernel(cwd, env)
    try:
        kernel.ok("%load_ext flyte_jupyter")
        yield kernel
    finally:
        kernel.shutdown()
