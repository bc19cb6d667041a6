"""Settings and where each value comes from.

Precedence, highest first: call arguments / magic options > session settings (`%flyte_config`,
the JupyterLab sidebar) > project file (`[tool.flyte-jupyter]` in root_dir's pyproject.toml, or
`.flyte-jupyter.toml`) > environment variables (`FLYTE_JUPYTER_<KEY>`) > defaults.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10
    import tomli as tomllib

# key -> (type, default, one-line help)
FIELDS: dict[str, tuple[type, Any, str]] = {
    "copy_style": (str, "auto", "auto | all | none"),
    "root_dir": (str, None, "bundle root (default: detected from the notebook directory)"),
    "include": (list, [], "globs of extra files to ship, e.g. data/*.csv"),
    "exclude": (list, [], "globs of files never to ship"),
    "lazy_imports": (bool, True, "follow imports inside functions"),
    "executor": (str, "local", "where runs execute: local | docker (any registered executor)"),
    "image": (str, None, "image (URI or reference name); local: python=/path"),
    "images": (dict, {}, "reference name -> image URI, as Flyte's images={...}"),
    "version": (str, None, "explicit version (required with copy_style none)"),
    "store": (str, None, "blob store URL (default: file:// store under the cache dir)"),
    "storage_options": (dict, {}, "fsspec storage options for the store"),
    "env": (dict, {}, "environment variables for runs"),
    "max_size_mb": (float, 100.0, "refuse bundles larger than this"),
    # flyte executor: on top of the Flyte config found the Flyte way (.flyte/config.yaml...)
    "flyte_config": (str, None, "flyte: path of the Flyte config.yaml (default: Flyte's search)"),
    "endpoint": (str, None, "flyte: control-plane endpoint, e.g. dns:///flyte.example.com"),
    "insecure": (bool, False, "flyte: plain-text connection to `endpoint`"),
    "project": (str, None, "flyte: project (default: task.project of the Flyte config)"),
    "domain": (str, None, "flyte: domain (default: task.domain of the Flyte config)"),
    "org": (str, None, "flyte: org (default: task.org of the Flyte config)"),
    "resources": (str, None, "flyte: task resources, e.g. cpu=2,memory=4Gi,gpu=1"),
    "secrets": (list, [], "flyte: secrets NAME or NAME=ENV_VAR mounted into the task"),
    "retries": (int, 0, "flyte: task retries"),
    "timeout": (float, None, "flyte: task timeout in seconds"),
}

PROJECT_FILES = ("pyproject.toml", ".flyte-jupyter.toml")


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str
    """option, session, project (with its file, e.g. "project (pyproject.toml)"),
    environment, default; or "detected" for a root_dir found from the notebook's folder."""


def coerce(key: str, value: Any) -> Any:
    """A value of the right type for `key`, from Python values or strings (env, magics)."""
    if key not in FIELDS:
        raise UsageError(f"unknown setting {key!r}: known settings are {', '.join(FIELDS)}")
    kind = FIELDS[key][0]
    if value is None or (
        isinstance(value, kind) and not (kind is float and isinstance(value, bool))
    ):
        return value
    if isinstance(value, str):
        if kind is bool:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        elif kind is str:
            return value
        elif kind is float:
            try:
                return float(value)
            except ValueError:
                pass
        elif kind is int and value.strip().isdigit():
            return int(value)
        elif kind is list:
            if value.strip().startswith("["):
                return coerce(key, _json(key, value))
            return [v.strip() for v in value.split(",") if v.strip()]
        elif kind is dict:
            return coerce(key, _json(key, value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, tuple):
        return list(value)
    raise UsageError(f"setting {key!r} must be a {kind.__name__}, not {value!r}")


def _json(key: str, text: str) -> Any:
    """JSON, or a Python literal (what `{expr}` expansion in a magic line produces)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise UsageError(f"setting {key!r}: {text!r} is not valid JSON ({exc.msg})") from exc


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    out = {}
    for key in FIELDS:
        raw = environ.get(f"FLYTE_JUPYTER_{key.upper()}")
        if raw is not None and raw != "":
            out[key] = coerce(key, raw)
    return out


def from_project(root: Path) -> dict[str, tuple[Any, str]]:
    """Project settings with the file each came from: `[tool.flyte-jupyter]` of
    root/pyproject.toml, overridden key by key by root/.flyte-jupyter.toml (which the
    JupyterLab sidebar writes)."""
    out: dict[str, tuple[Any, str]] = {}
    for name in PROJECT_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read settings from {path}: {exc}") from exc
        table = doc.get("tool", {}).get("flyte-jupyter", {}) if name == "pyproject.toml" else doc
        for key, value in table.items():
            key = key.replace("-", "_")
            out[key] = (coerce(key, value), name)
    return out


def save_project(root: Path, values: Mapping[str, Any]) -> Path:
    """Write settings to root/.flyte-jupyter.toml (None values are left out)."""
    lines = ["# flyte-jupyter settings for this project (written by the JupyterLab sidebar)"]
    for key, value in sorted(values.items()):
        value = coerce(key, value)
        if value is not None:
            lines.append(f"{key} = {_toml(value)}")
    path = root / ".flyte-jupyter.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise UsageError(f"cannot store {value!r} in a settings file")


def resolve(
    options: Mapping[str, Any],
    session: Mapping[str, Any],
    project_root: Path | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Setting]:
    """Every setting's effective value and the layer it came from."""
    project = from_project(project_root) if project_root else {}
    options = {k: coerce(k, v) for k, v in options.items() if v is not None}
    session = {k: coerce(k, v) for k, v in session.items()}
    environment = from_environment(environ)
    out: dict[str, Setting] = {}
    for key, (_kind, default, _help) in FIELDS.items():
        if key in options:
            out[key] = Setting(options[key], "option")
        elif key in session:
            out[key] = Setting(session[key], "session")
        elif key in project:
            value, file = project[key]
            out[key] = Setting(value, f"project ({file})")
        elif key in environment:
            out[key] = Setting(environment[key], "environment")
        else:
            out[key] = Setting(default, "default")
    return out


def resolve_image(image: str | None, images: Mapping[str, str]) -> str | None:
    """An image reference name resolved through `images` (Flyte's `from_ref_name` +
    `images={...}`); a name that looks like a reference but is unmapped is an error."""
    if image is None or image in images.values():
        return image
    if image in images:
        return images[image]
    looks_like_ref = not any(c in image for c in ":/=@")
    if images and looks_like_ref:
        known = ", ".join(sorted(images))
        raise UsageError(f"image reference {image!r} is not mapped: known references are {known}")
    return image
