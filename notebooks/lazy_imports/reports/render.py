"""render() imports reports.formats inside the function: a lazy import.

Flyte's loaded-modules scan only sees modules imported when the task module loads, so it
would leave reports/formats.py out and the remote run would fail with ModuleNotFoundError.
"""


def render(metrics: dict[str, float]) -> str:
    from reports.formats import as_table

    return as_table(metrics)
