"""Settings and where each value comes from: one declaration, one resolver.

Every field is declared once in `FIELDS` (name, type, allowed values, default, help, the
CLI and magic flags, the sidebar widget); the CLI and magic parsers, the server's `fields`
and the validation all come from it. `resolve()` is the one resolver every front door uses.

Precedence, highest first: call arguments / magic options > session settings (`%flyte_config`,
the JupyterLab sidebar) > project file (`.flyte-jupyter.toml` over `[tool.flyte-jupyter]` of
pyproject.toml, in the project folder) > environment variables (`FLYTE_JUPYTER_<KEY>`) >
defaults.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, NamedTuple

from .errors import UsageError


def tomllib_module() -> ModuleType:
    """tomllib (tomli before 3.11), imported when a TOML file is read: ~3.5 ms otherwise."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10
        import tomli as tomllib
    return tomllib


def _executors() -> Sequence[str]:
    """Registered executors (entry points), looked up only when an executor is set."""
    from .executors.registry import available_executors

    return available_executors()


# Named tuples and a plain class, not dataclasses: every command imports this module, and
# dataclasses (with inspect) plus building the classes cost ~6 ms.
class Field(NamedTuple):
    """One setting, as every front door shows it."""

    name: str
    kind: type
    """str, bool, int, float, list (of str) or dict."""
    default: Any
    help: str
    choices: tuple[str, ...] | Callable[[], Sequence[str]] = ()
    """Allowed values (a callable: looked up when a value is set)."""
    minimum: float | None = None
    """Smallest allowed number; `above` makes it exclusive."""
    above: bool = False
    cli: str | None = ""
    """CLI flag ("" derives --name-with-dashes; None: no flag)."""
    magic: str | None = ""
    """%%flyte_run flag, as `cli`."""
    metavar: str | None = None
    pairs_json: bool = False
    """dict fields: NAME=VALUE pairs on the command line, VALUE parsed as JSON."""
    widget: str = ""
    """Sidebar widget: text, select, checkbox, number, list, json ("" derives it)."""
    group: str = "selection"
    """selection (what ships), run (where and how it runs), flyte (the flyte executor)."""

    @property
    def cli_flag(self) -> str | None:
        return _flag(self, self.cli)

    @property
    def magic_flag(self) -> str | None:
        return _flag(self, self.magic)

    @property
    def widget_kind(self) -> str:
        if self.widget:
            return self.widget
        if self.choices:
            return "select"
        return {bool: "checkbox", int: "number", float: "number", list: "list", dict: "json"}.get(
            self.kind, "text"
        )

    def allowed(self) -> tuple[str, ...]:
        choices = self.choices() if callable(self.choices) else self.choices
        return tuple(choices)

    def to_json(self) -> dict[str, Any]:
        """What the server sends the sidebar."""
        return {
            "type": self.kind.__name__,
            "default": self.default,
            "help": self.help,
            "choices": list(self.allowed()),
            "minimum": self.minimum,
            "widget": self.widget_kind,
            "group": self.group,
            "cli": self.cli_flag,
            "magic": self.magic_flag,
        }


def _flag(f: Field, given: str | None) -> str | None:
    if given is None:
        return None
    if given:
        return given
    dashed = f.name.replace("_", "-")
    if f.kind is bool and f.default is True:
        return f"--no-{dashed}"
    return f"--{dashed}"


_DECLARED = (
    Field("root_dir", str, None, "bundle root (default: detected from the notebook or file)",
          metavar="DIR"),
    Field("copy_style", str, "auto", "auto: the local modules the code imports; all: every "
          "file not ignored; none: no code (needs version)", choices=("auto", "all", "none")),
    Field("include", list, [], "also ship files matching this gitignore-style glob, e.g. "
          "'data/*.csv' (repeatable)", metavar="GLOB"),
    Field("exclude", list, [], "never ship files matching this glob (repeatable)",
          metavar="GLOB"),
    Field("lazy_imports", bool, True, "follow imports inside functions (off: Flyte's own "
          "behaviour)"),
    Field("version", str, None, "explicit version (required with copy_style none)"),
    Field("max_size_mb", float, 100.0, "refuse bundles larger than this many MB",
          minimum=0, above=True, cli="--max-size", magic="--max-size", metavar="MB"),
    Field("executor", str, "local", "where runs execute", choices=_executors, group="run"),
    Field("image", str, None, "image (URI or reference name); local executor: python=/path",
          group="run"),
    Field("images", dict, {}, "image reference name -> URI, as Flyte's images={...} "
          "(repeatable NAME=URI)", metavar="NAME=URI", group="run"),
    Field("store", str, None, "blob store URL (default: a file:// store under the cache dir)",
          metavar="URL", group="run"),
    Field("storage_options", dict, {}, "fsspec storage option for the store (repeatable "
          "KEY=JSON)", cli="--storage-option", magic="--storage-option", metavar="KEY=JSON",
          pairs_json=True, group="run"),
    Field("env", dict, {}, "environment variable for runs (repeatable K=V)", metavar="K=V",
          group="run"),
    Field("warm_workers", bool, True, "local and docker executors: start runs from a warm "
          "worker (a clean process forked from a prepared interpreter)", cli=None, magic=None,
          group="run"),
    # flyte executor: on top of the Flyte config found the Flyte way (.flyte/config.yaml...)
    Field("flyte_config", str, None, "path of the Flyte config.yaml (default: Flyte's search)",
          metavar="PATH", group="flyte"),
    Field("endpoint", str, None, "control-plane endpoint, e.g. dns:///flyte.example.com",
          group="flyte"),
    Field("insecure", bool, False, "plain-text connection to `endpoint`", group="flyte"),
    Field("project", str, None, "project (default: task.project of the Flyte config)",
          group="flyte"),
    Field("domain", str, None, "domain (default: task.domain of the Flyte config)",
          group="flyte"),
    Field("org", str, None, "org (default: task.org of the Flyte config)", group="flyte"),
    Field("resources", str, None, "task resources, e.g. cpu=2,memory=4Gi,gpu=1",
          group="flyte"),
    Field("secrets", list, [], "secret NAME or NAME=ENV_VAR mounted into the task "
          "(repeatable)", cli="--secret", magic="--secret", metavar="SECRET", group="flyte"),
    Field("retries", int, 0, "task retries", minimum=0, group="flyte"),
    Field("timeout", float, None, "task timeout in seconds", minimum=0, above=True,
          cli="--task-timeout", magic="--task-timeout", metavar="SECONDS", group="flyte"),
)  # fmt: skip

FIELDS: dict[str, Field] = {f.name: f for f in _DECLARED}
_ALIASES = {("copy_style", "loaded_modules"): "auto"}
"""Flyte's own names for a value."""
PROJECT_FILES = ("pyproject.toml", ".flyte-jupyter.toml")
"""Read in this order: .flyte-jupyter.toml (which the sidebar writes) wins key by key."""


class Setting(NamedTuple):
    value: Any
    source: str
    """option, session, project (with its file, e.g. "project (pyproject.toml)"),
    environment, default; or "detected" for a root_dir found from the notebook's folder."""


class Settings(Mapping[str, Setting]):
    """Every setting's effective value and its source. Values read as attributes
    (`settings.copy_style`), `settings["copy_style"]` is the Setting with its source.
    Read-only; equality is a mapping's: key by key."""

    __slots__ = ("raw", "sources")
    raw: Mapping[str, Any]
    sources: Mapping[str, str]

    def __init__(self, raw: Mapping[str, Any], sources: Mapping[str, str]):
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "sources", sources)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"settings are read-only: with_value() gives a copy with {name}")

    def __repr__(self) -> str:
        return f"Settings(raw={self.raw!r}, sources={self.sources!r})"

    def __getattr__(self, name: str) -> Any:
        if name in FIELDS:
            return self.raw[name]
        raise AttributeError(name)

    def __getitem__(self, key: str) -> Setting:
        return Setting(self.raw[key], self.sources[key])

    def __iter__(self) -> Iterator[str]:
        return iter(FIELDS)

    def __len__(self) -> int:
        return len(FIELDS)

    @property
    def root(self) -> Path | None:
        """root_dir as a path (None when the settings were resolved without a project)."""
        value = self.raw["root_dir"]
        return Path(value) if value else None

    def source(self, key: str) -> str:
        return self.sources[key]

    def with_value(self, key: str, value: Any, source: str) -> Settings:
        """A copy with one setting replaced (validated)."""
        values = {**self.raw, key: coerce(key, value)}
        return Settings(MappingProxyType(values), MappingProxyType({**self.sources, key: source}))

    def plain(self) -> dict[str, Any]:
        return dict(self.raw)

    def __reduce__(self) -> tuple[Any, ...]:
        """Picklable (a read-only mapping proxy is not): rebuilt from plain dicts."""
        return _settings, (dict(self.raw), dict(self.sources))


def _settings(raw: dict[str, Any], sources: dict[str, str]) -> Settings:
    return Settings(MappingProxyType(raw), MappingProxyType(sources))


def coerce(key: str, value: Any) -> Any:
    """A valid value for `key` from Python values or strings (env, magics, the CLI): the
    right type, one of the allowed values, within range; else a UsageError naming them."""
    field_ = FIELDS.get(key)
    if field_ is None:
        raise UsageError(f"unknown setting {key!r}: known settings are {', '.join(FIELDS)}")
    value = _typed(field_, value)
    if value is None:
        return None
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise UsageError(f'`{key}` must be a list of strings, e.g. ["data/*.csv"]')
    if isinstance(value, dict) and _depth(value) > 4:
        raise UsageError(f"`{key}` is nested too deeply: give a flat table of name -> value")
    if isinstance(value, float) and (value != value or abs(value) == float("inf")):
        raise UsageError(f"`{key}` must be a finite number, not {value!r}")
    value = _ALIASES.get((key, value), value) if isinstance(value, str) else value
    if field_.choices and value not in field_.allowed():
        allowed = ", ".join(field_.allowed())
        raise UsageError(f"`{key}` {value!r} is not allowed: use one of {allowed}")
    if field_.minimum is not None and (
        value < field_.minimum or (field_.above and value == field_.minimum)
    ):
        bound = "above" if field_.above else "at least"
        raise UsageError(f"`{key}` must be {bound} {field_.minimum:g}, not {value!r}")
    return value


def _depth(value: Any, limit: int = 5) -> int:
    """How deeply dicts and lists nest in `value`, counted no further than `limit`."""
    if limit <= 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _typed(field_: Field, value: Any) -> Any:
    key, kind = field_.name, field_.kind
    if value is None or (
        isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
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
        elif kind is int and value.strip().lstrip("-").isdigit():
            return int(value)
        elif kind is list:
            if value.strip().startswith("["):
                return _typed(field_, _json(key, value))
            return [v.strip() for v in value.split(",") if v.strip()]
        elif kind is dict:
            return _typed(field_, _json(key, value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, tuple):
        return list(value)
    raise UsageError(f"`{key}` must be a {kind.__name__}, not {value!r}")


def _json(key: str, text: str) -> Any:
    """JSON, or a Python literal (what `{expr}` expansion in a magic line produces)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        import ast  # only for this fallback: 1 ms at import otherwise

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
            try:
                out[key] = coerce(key, raw)
            except UsageError as exc:
                raise UsageError(f"FLYTE_JUPYTER_{key.upper()}: {_as_written(exc)}") from None
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
        tomllib = tomllib_module()
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read settings from {path}: {exc}") from exc
        table = doc.get("tool", {}).get("flyte-jupyter", {}) if name == "pyproject.toml" else doc
        for key, value in table.items():
            key = key.replace("-", "_")
            try:
                out[key] = (coerce(key, value), name)
            except UsageError as exc:
                raise UsageError(f"{path}: {_as_written(exc)}") from None
    return out


def _as_written(exc: UsageError) -> str:
    """A setting's message with its names as a file or variable writes them (`copy_style`
    stays copy_style: no front door turns it into its own flag)."""
    text = str(exc)  # only the name's quotes: a value keeps its own backticks
    return text.replace("`", "", 2) if text.startswith("`") else text


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


def _layers(
    options: Mapping[str, Any],
    session: Mapping[str, Any],
    project: Mapping[str, tuple[Any, str]],
    environ: Mapping[str, str] | None,
) -> Settings:
    options = {k: coerce(k, v) for k, v in options.items() if v is not None}
    session = {k: coerce(k, v) for k, v in session.items()}
    environment = from_environment(environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, f in FIELDS.items():
        if key in options:
            values[key], sources[key] = options[key], "option"
        elif key in session:
            values[key], sources[key] = session[key], "session"
        elif key in project:
            value, file = project[key]
            values[key], sources[key] = value, f"project ({file})"
        elif key in environment:
            values[key], sources[key] = environment[key], "environment"
        else:
            values[key], sources[key] = _copy(f.default), "default"
    return Settings(MappingProxyType(values), MappingProxyType(sources))


def _copy(value: Any) -> Any:
    return type(value)(value) if isinstance(value, list | dict) else value


def resolve(
    path: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    session: Mapping[str, Any] | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    boundary: Path | None = None,
) -> Settings:
    """The effective settings for a notebook, file or folder at `path` (None: the current
    directory). The project folder is root_dir when an option or the session sets it, else
    the folder detected from `path` (never above `boundary`); its project files are read.
    root_dir is then absolute: set (relative to `path`'s folder) or "detected".

    The older form `resolve(options, session, project_root)` still works: no detection,
    the project files of project_root (if any) are read."""
    if isinstance(path, Mapping):  # resolve(options, session, project_root[, environ])
        project_root = session if isinstance(session, Path) else None
        old_session = options or {}
        return _layers(path, old_session, from_project(project_root) if project_root else {},
                       environ)  # fmt: skip
    from .selection import detect_root_dir  # heavier imports; config stays light

    options = {k: v for k, v in (options or {}).items() if v is not None}
    session = dict(session or {}) if not isinstance(session, Path) else {}
    start = Path(path if path is not None else ".").expanduser().resolve()
    base = start if start.is_dir() else start.parent
    explicit = _layers(options, session, {}, {})
    chosen = explicit.root_dir if explicit.source("root_dir") != "default" else None
    folder = _root_path(base, chosen) if chosen else detect_root_dir(base, boundary=boundary)
    settings = _layers(options, session, from_project(folder), environ)
    if settings.root_dir is None:
        return settings.with_value("root_dir", str(folder), "detected")
    return settings.with_value("root_dir", str(_root_path(base, settings.root_dir)),
                               settings.source("root_dir"))  # fmt: skip


def _root_path(base: Path, value: str) -> Path:
    return (base / Path(value).expanduser()).resolve()


def default_store() -> str:
    """The store a run uses when none is set (as `Store(None)` picks it)."""
    from ..runtime.locations import cache_dir

    return (cache_dir() / "store").as_uri()


def front_door_message(message: str, door: str) -> str:
    """`message` with each setting written as `name` replaced by the flag of the front door
    the user is in: door "cli" or "magic" (elsewhere the setting's name stays)."""
    for f in FIELDS.values():
        flag = f.cli_flag if door == "cli" else f.magic_flag if door == "magic" else None
        if flag:
            message = message.replace(f"`{f.name}`", flag)
    return message


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
