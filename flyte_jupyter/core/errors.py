"""Errors a user can act on: each carries one message that says what is wrong and what to do."""


class FlyteJupyterError(Exception):
    """Base class for errors shown to users as a single line, without a traceback."""


class UsageError(FlyteJupyterError):
    """Bad input: an unknown option value, a missing path, an entry outside root_dir."""


class BundleError(FlyteJupyterError):
    """The code cannot be bundled as asked: unreadable file, bundle too large, bad root_dir."""
