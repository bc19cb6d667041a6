"""The packaging core: pure library code shared by the magics, the sidebar and the CLI.

Nothing in here imports IPython, Jupyter or UI code.
"""
