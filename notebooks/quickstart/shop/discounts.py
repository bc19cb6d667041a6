"""Discounts, imported lazily by shop.pricing."""


def best_discount(prices: list[float]) -> float:
    return 0.1 if len(prices) >= 3 else 0.0
