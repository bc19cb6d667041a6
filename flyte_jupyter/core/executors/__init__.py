"""Executors: where a bundle runs. Each one registers in the `flyte_jupyter.executors`
entry-point group and is imported only when asked for."""
