"""Arithmetic that can fail."""


def ratio(a: float, b: float) -> float:
    return a / b
