"""Pickling values on their way back to the client."""

from __future__ import annotations

import pickle
from typing import Any


def dumps(value: Any) -> bytes:
    """Plain pickle when it can (no import cost); cloudpickle for what it cannot (lambdas,
    local classes), when the environment has it."""
    try:
        return pickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        try:
            import cloudpickle
        except ImportError:
            raise exc from None
        return cloudpickle.dumps(value, protocol=pickle.DEFAULT_PROTOCOL)
