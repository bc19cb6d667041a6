"""flyte-jupyter: run notebook code remotely with Flyte-style, content-hashed code bundles."""

__version__ = "0.1.0"
