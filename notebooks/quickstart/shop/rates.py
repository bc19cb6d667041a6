"""Tax rates by region."""

RATES = {"eu": 0.2, "us": 0.07}


def tax_rate(region: str) -> float:
    return RATES[region]
