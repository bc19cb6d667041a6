"""flyte-jupyter: run notebook code remotely with Flyte-style, content-hashed code bundles."""

__version__ = "0.1.0"


def load_ipython_extension(shell):
    """`%load_ext flyte_jupyter`: register the magics (imported only now, so that importing
    this package stays cheap for the runtime)."""
    from .kernel.magics import load

    load(shell)
