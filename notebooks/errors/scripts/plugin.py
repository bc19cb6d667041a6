"""Loaded by a computed name (importlib.import_module), which no import scan can follow."""

NAME = "plugin loaded"
