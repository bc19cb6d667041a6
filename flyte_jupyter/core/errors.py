"""Errors a user can act on: each carries one message that says what is wrong and what to do."""


class FlyteJupyterError(Exception):
    """Base class for errors shown to users as a single line, without a traceback."""


class UsageError(FlyteJupyterError):
    """Bad input: an unknown option value, a missing path, an entry outside root_dir."""


class BundleError(FlyteJupyterError):
    """The code cannot be bundled as asked: unreadable file, bundle too large, bad root_dir."""


class RunError(FlyteJupyterError):
    """A run could not be submitted, or did not finish in time."""


class RemoteError(FlyteJupyterError):
    """The remote code raised. Carries the remote exception's type, message and traceback
    (file names relative to the bundle), plus advice when the cause is a known packaging trap."""

    def __init__(
        self,
        run_id: str,
        remote_type: str,
        message: str,
        remote_traceback: str = "",
        hint: str = "",
    ):
        self.run_id = run_id
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback
        self.hint = hint
        super().__init__(f"{remote_type}: {message}")

    def __str__(self) -> str:
        text = f"run {self.run_id} failed with {self.remote_type}: {self.remote_message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        if self.hint:
            text += "\n\n" + self.hint
        return text
