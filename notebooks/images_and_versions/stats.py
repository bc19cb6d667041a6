"""A small local module for the images-and-versions example."""

import statistics


def spread(values: list[float]) -> float:
    return round(statistics.pstdev(values), 3)
