"""Errors a user can act on: each carries one message that says what is wrong and what to do.
All of them are FlyteJupyterErrors, so a front door catches that one family."""

import builtins


class FlyteJupyterError(Exception):
    """Base class for errors shown to users as a single line, without a traceback."""


class UsageError(FlyteJupyterError):
    """Bad input: an unknown option value, a missing path, an entry outside root_dir."""


class NotebookError(UsageError):
    """A cell cannot be shipped as asked; the message names the culprit and the fix."""


class StorageError(FlyteJupyterError):
    """Storage cannot be used as configured; the message says why and what to do."""


class StoreConfigError(StorageError, UsageError):
    """The store URL cannot work at all (e.g. a path below a file): bad input, exit status 2."""


class ImageError(FlyteJupyterError):
    """The image cannot be rendered or built as specified; the message says how to fix it."""


class BundleError(FlyteJupyterError):
    """The code cannot be bundled as asked: unreadable file, bundle too large, bad root_dir."""


class RunError(FlyteJupyterError):
    """A run could not be submitted, or did not finish in time."""


class RunCancelled(RunError):
    """The run was stopped (the kernel's Stop button, the sidebar, `runs cancel`, a timeout)."""


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
        remote_module: str = "",
    ):
        self.run_id = run_id
        self.remote_type = remote_type
        self.remote_module = remote_module
        self.remote_message = message
        self.remote_traceback = remote_traceback
        self.hint = hint
        self.brief = False
        """Set while a notebook shows the remote frames itself: str() is then the message."""
        super().__init__(f"{remote_type}: {message}")

    def __str__(self) -> str:
        if self.brief:
            return self.remote_message
        text = f"run {self.run_id} failed with {self.remote_type}: {self.remote_message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        if self.hint:
            text += "\n\n" + self.hint
        return text


_NOT_MIRRORED = (StopIteration, StopAsyncIteration)
"""Builtin exceptions that end iterations: a remote one must not end a local loop."""


def remote_error(
    run_id: str,
    remote_type: str,
    message: str,
    remote_traceback: str = "",
    hint: str = "",
    remote_module: str = "builtins",
) -> RemoteError:
    """A RemoteError that is also the remote exception's builtin type when that type is known
    here (`except ZeroDivisionError` catches a remote ZeroDivisionError); for other types a
    RemoteError subclass that carries the remote type's name. Only names are used: nothing
    from the remote is imported or unpickled."""
    args = (run_id, remote_type, message, remote_traceback, hint, remote_module)
    if not remote_type.isidentifier() or remote_type == "RemoteError":
        return RemoteError(*args)
    module = remote_module if remote_module.isprintable() else ""
    builtin = getattr(builtins, remote_type, None) if remote_module == "builtins" else None
    if (
        isinstance(builtin, type)
        and issubclass(builtin, Exception)
        and not issubclass(builtin, _NOT_MIRRORED)
    ):
        try:
            return _remote_class(remote_type, module, (RemoteError, builtin))(*args)
        except Exception:  # a builtin whose constructor wants other values (UnicodeError)
            pass
    return _remote_class(remote_type, module, (RemoteError,))(*args)


_CLASSES: dict[tuple[str, str, tuple[type, ...]], type[RemoteError]] = {}


def _remote_class(name: str, module: str, bases: tuple[type, ...]) -> type[RemoteError]:
    """One class per remote type, so two remote ZeroDivisionErrors have the same type."""
    key = (name, module, bases)
    if key not in _CLASSES:
        doc = f"{module}.{name} raised by a remote run."
        _CLASSES[key] = type(name, bases, {"__doc__": doc, "__module__": module or __name__})
    return _CLASSES[key]
