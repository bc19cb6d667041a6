"""Entry point of the quickstart project: the code a notebook cell would run remotely."""

import json
from pathlib import Path

from shop.pricing import basket_total


def main(prices: list[float] | None = None) -> float:
    prices = prices or json.loads(Path("data/prices.json").read_text())
    return basket_total(prices)


if __name__ == "__main__":
    print(main())
