"""flyte-jupyter: run notebook code remotely with Flyte-style, content-hashed code bundles."""


def __getattr__(name: str) -> str:
    """`flyte_jupyter.__version__`, from the installed metadata, whose one source is
    package.json (see pyproject.toml). Looked up on first use: importing this package stays
    cheap, and the runtime's private copy (no metadata beside it) imports it too."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flyte-jupyter")
    except PackageNotFoundError:
        return "unknown"  # the runtime copy shipped into an image or another interpreter


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the prebuilt JupyterLab extension lives (for `jupyter labextension develop`)."""
    return [{"src": "labextension", "dest": "flyte-jupyter"}]


def load_ipython_extension(shell) -> None:  # type: ignore[no-untyped-def]
    """`%load_ext flyte_jupyter`: register the magics (imported only now, so that importing
    this package stays cheap for the runtime)."""
    if not hasattr(shell, "register_magics"):
        raise RuntimeError(
            "flyte-jupyter's magics need IPython (a Jupyter kernel or `ipython`); from a plain "
            "Python script use the command line (`flyte-jupyter run FILE.py:FUNCTION`) or "
            "flyte_jupyter.core.submit.submit()"
        )
    from .kernel.magics import load

    load(shell)


def unload_ipython_extension(shell) -> None:  # type: ignore[no-untyped-def]
    """`%unload_ext flyte_jupyter` (and the first half of `%reload_ext`)."""
    from .kernel.magics import unload

    unload(shell)
