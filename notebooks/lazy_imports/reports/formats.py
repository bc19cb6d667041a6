"""Formatting helpers, imported lazily by reports.render."""


def as_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k.ljust(width)} | {v:8.2f}" for k, v in sorted(metrics.items()))
