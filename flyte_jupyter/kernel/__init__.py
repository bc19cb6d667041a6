"""The kernel front door: IPython magics over the core (loaded by `%load_ext flyte_jupyter`)."""
