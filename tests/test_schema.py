"""The JupyterLab settings schema (the user's defaults behind "Also use as my default") is a
view of `config.FIELDS`: every property is a declared field with the same type, default and
allowed values, so the schema cannot offer a value the server rejects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flyte_jupyter.core import config

REPO = Path(__file__).resolve().parent.parent
PACKAGE = json.loads((REPO / "package.json").read_text())
SCHEMA = json.loads((REPO / PACKAGE["jupyterlab"]["schemaDir"] / "sidebar.json").read_text())
JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}
JSON_TYPES.update({list: "array", dict: "object"})


def test_schema_keys_are_declared_fields():
    unknown = sorted(set(SCHEMA["properties"]) - set(config.FIELDS))
    print("schema properties:", len(SCHEMA["properties"]), "not in FIELDS:", unknown)
    assert unknown == []
    assert SCHEMA["additionalProperties"] is False


@pytest.mark.parametrize("key", sorted(SCHEMA["properties"]))
def test_schema_property_matches_its_field(key: str):
    prop, field = SCHEMA["properties"][key], config.FIELDS[key]
    types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    assert JSON_TYPES[field.kind] in types
    assert ("null" in types) == (field.default is None), "nullable exactly when unset by default"
    assert prop["default"] == field.default
    if callable(field.choices):  # looked up at run time (installed executors): no fixed enum
        assert "enum" not in prop
    else:
        assert prop.get("enum", []) == list(field.choices)
