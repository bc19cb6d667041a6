"""Prices with tax, the kind of helper a notebook imports from its project."""

from shop.rates import tax_rate


def with_tax(amount: float, region: str = "eu") -> float:
    return round(amount * (1 + tax_rate(region)), 2)


def basket_total(prices: list[float], region: str = "eu") -> float:
    # Imported lazily: Flyte's loaded-modules scan would not ship shop.discounts.
    from shop.discounts import best_discount

    return round(with_tax(sum(prices), region) * (1 - best_discount(prices)), 2)
