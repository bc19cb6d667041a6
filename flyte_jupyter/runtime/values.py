"""Pickling values on their way back to the client, straight into files or into sinks that
keep no bytes, and the text summary of them that processes which must not unpickle (the
Jupyter server, `flyte-jupyter runs show`) show."""

from __future__ import annotations

import pickle
import reprlib
from typing import Any, BinaryIO

REPR_LIMIT = 1024
"""Bytes of UTF-8 a summary's repr may take."""


class _Repr(reprlib.Repr):
    # reprlib cuts str before calling repr(), but has no rule for bytes: repr() of a 1 GB
    # bytes value would build a 4 GB string. Cut bytes the same way as str.
    repr_bytes = repr_bytearray = reprlib.Repr.repr_str


_REPR = _Repr()
_REPR.maxlevel = 3
_REPR.maxlong = 200
_REPR.maxstring = _REPR.maxother = REPR_LIMIT
for _kind in ("maxdict", "maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _kind, 30)


def dump(value: Any, file: BinaryIO) -> int:
    """Plain pickle when it can (no import cost), cloudpickle for what it cannot (lambdas,
    local classes) when the environment has it, straight into a seekable `file`: the bytes
    are never built in memory. Returns the number of bytes written."""
    start = file.tell()
    try:
        pickle.dump(value, file, protocol=pickle.DEFAULT_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        try:
            import cloudpickle
        except ImportError:
            raise exc from None
        file.seek(start)
        file.truncate()
        cloudpickle.dump(value, file, protocol=pickle.DEFAULT_PROTOCOL)
    return file.tell() - start


class Sink:
    """A write-only file that keeps no bytes: pickling into it checks a value can travel and
    measures (and, given a hash, digests) its pickle without building it in memory."""

    def __init__(self, digest: Any = None) -> None:
        self.size = 0
        self.digest = digest

    def write(self, data: Any) -> int:
        view = memoryview(data)
        if self.digest is not None:
            self.digest.update(view)
        self.size += view.nbytes
        return view.nbytes


def pickled_size(value: Any) -> int:
    """The size `dump` would write for `value`, without keeping the pickle; raises what
    pickling it raises."""
    try:
        sink = Sink()
        pickle.dump(value, sink, protocol=pickle.DEFAULT_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        try:
            import cloudpickle
        except ImportError:
            raise exc from None
        sink = Sink()
        cloudpickle.dump(value, sink, protocol=pickle.DEFAULT_PROTOCOL)
    return sink.size


def summarize(value: Any, size: int | None) -> dict[str, Any]:
    """Type, module, bounded repr and pickled size of `value`, made in the run's own process
    (the only place where running the value's `__repr__` is the user's code running as asked)."""
    cls = type(value)
    return {
        "type": cls.__qualname__,
        "module": cls.__module__,
        "repr": bounded_repr(value),
        "size": size,
    }


def bounded_repr(value: Any) -> str:
    """repr() cut to REPR_LIMIT bytes; containers are abbreviated before they are rendered."""
    try:
        text = _REPR.repr(value)
    except Exception as exc:  # a broken __repr__ must not fail the run that returned it
        text = f"<{type(value).__qualname__} object: repr() raised {type(exc).__name__}>"
    raw = text.encode("utf-8", "replace")
    if len(raw) <= REPR_LIMIT:
        return text
    return raw[: REPR_LIMIT - 3].decode("utf-8", "ignore") + "..."
