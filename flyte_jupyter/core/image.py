"""Container images in Flyte's vocabulary: an immutable `Image` spec that renders to a
deterministic Dockerfile and build context, and is built with the docker SDK.

Same spec and same files give the same context bytes, hence the same content hash and the
same default tag; an image whose tag already exists is not rebuilt. Layers are ordered so
that changing code never reinstalls dependencies: base, environment, apt packages, Python
packages, the flyte-jupyter runtime, commands, then source code last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .bundle import end_of_archive, tar_entry
from .errors import ImageError, UsageError  # ImageError re-exported
from .files import archive_mode
from .runtime_files import runtime_files
from .selection import select_files

DEFAULT_REPOSITORY = "flyte-jupyter"
WORKDIR = "/app"
VENV = "/opt/venv"
RUNTIME_DIR = "/opt/flyte-jupyter"

Log = Callable[[str], None]


@dataclass(frozen=True)
class SourceFolder:
    src: Path
    dst: str
    copy_contents_only: bool
    files: tuple[tuple[str, str], ...] | None = None
    """Exact files to copy, as (path under dst, file to read); None copies what the ignore
    rules allow from src."""


@dataclass(frozen=True)
class Image:
    """An image specification. Build methods return a new Image; nothing is built until
    `build_image` is called."""

    base: str | None = None
    ref_name: str | None = None
    dockerfile: Path | None = None
    python_version: str | None = None
    apt_packages: tuple[str, ...] = ()
    pip_packages: tuple[str, ...] = ()
    requirements: tuple[Path, ...] = ()
    commands: tuple[str, ...] = ()
    env_vars: tuple[tuple[str, str], ...] = ()
    workdir: str = WORKDIR
    sources: tuple[SourceFolder, ...] = ()
    files: tuple[tuple[Path, str], ...] = ()
    dockerignore: Path | None = None
    entrypoint: tuple[str, ...] = ()
    name: str = DEFAULT_REPOSITORY

    # --- constructors (Flyte's names) ----------------------------------------------------

    @classmethod
    def from_debian_base(
        cls, python_version: str | None = None, name: str = DEFAULT_REPOSITORY
    ) -> Image:
        """Debian bookworm with Python (default: this interpreter's major.minor)."""
        version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        base = _checked_base(f"python:{version}-slim-bookworm")
        return cls(base=base, python_version=version, name=name)

    @classmethod
    def from_base(cls, uri: str, name: str = DEFAULT_REPOSITORY) -> Image:
        return cls(base=_checked_base(uri), name=name)

    @classmethod
    def from_ref_name(cls, ref_name: str) -> Image:
        """An image known only by a reference name, mapped to a URI at run time
        (`images={"name": "registry/app:tag"}`)."""
        return cls(ref_name=ref_name)

    @classmethod
    def from_dockerfile(cls, path: str | os.PathLike[str], name: str = DEFAULT_REPOSITORY) -> Image:
        return cls(dockerfile=Path(path).resolve(), name=name)

    # --- layers --------------------------------------------------------------------------

    def _buildable(self) -> None:
        if self.ref_name is not None:
            raise ImageError(
                f"image reference {self.ref_name!r} names an image built elsewhere: it cannot "
                "have layers added; map it to a URI with images={...} at run time"
            )

    def with_pip_packages(self, *packages: str) -> Image:
        self._buildable()
        return replace(self, pip_packages=self.pip_packages + _checked(_pip_name, packages))

    def with_requirements(self, path: str | os.PathLike[str]) -> Image:
        self._buildable()
        return replace(self, requirements=(*self.requirements, Path(path).resolve()))

    def with_uv_project(self, pyproject_file: str | os.PathLike[str]) -> Image:
        """The dependencies of a pyproject.toml's [project] table."""
        from .config import tomllib_module

        path = Path(pyproject_file)
        deps = tomllib_module().loads(path.read_text()).get("project", {}).get("dependencies", [])
        return self.with_pip_packages(*deps)

    def with_apt_packages(self, *packages: str) -> Image:
        self._buildable()
        return replace(self, apt_packages=self.apt_packages + _checked(_apt_name, packages))

    def with_commands(self, *commands: str) -> Image:
        self._buildable()
        return replace(self, commands=self.commands + _checked(_command, commands))

    def with_env_vars(self, env: Mapping[str, str]) -> Image:
        self._buildable()
        pairs = tuple(sorted(env.items()))
        for key, value in pairs:
            _env_pair(key, value)
        return replace(self, env_vars=self.env_vars + pairs)

    def with_workdir(self, path: str) -> Image:
        self._buildable()
        return replace(self, workdir=_workdir(path))

    def with_source_folder(
        self,
        src: str | os.PathLike[str],
        dst: str | None = None,
        copy_contents_only: bool = False,
    ) -> Image:
        """Copy a folder into the image: its contents into `dst` (copy_contents_only=True),
        or the folder itself, by name, under `dst` (False). `dst` defaults to the workdir."""
        self._buildable()
        dst = _context_path(dst or self.workdir, "with_source_folder dst")
        folder = SourceFolder(Path(src).resolve(), dst, copy_contents_only)
        if not folder.src.is_dir():
            raise ImageError(f"with_source_folder: {folder.src} is not a directory")
        return replace(self, sources=(*self.sources, folder))

    def with_files(
        self, files: Mapping[str, str | os.PathLike[str]], dst: str | None = None
    ) -> Image:
        """Copy exactly these files (path under `dst` -> file to read), e.g. a bundle's
        selection, into `dst` (default: the workdir)."""
        self._buildable()
        pairs = tuple(sorted((rel, str(source)) for rel, source in files.items()))
        for rel, _ in pairs:
            _context_path(rel, "with_files path")
        dst = _context_path(dst or self.workdir, "with_files dst")
        folder = SourceFolder(Path(dst), dst, True, pairs)
        return replace(self, sources=(*self.sources, folder))

    def with_source_file(self, src: str | os.PathLike[str], dst: str) -> Image:
        self._buildable()
        path = Path(src).resolve()
        if not path.is_file():
            raise ImageError(f"with_source_file: {path} is not a file")
        dst = _context_path(dst, "with_source_file dst")
        return replace(self, files=(*self.files, (path, dst)))

    def with_dockerignore(self, path: str | os.PathLike[str]) -> Image:
        self._buildable()
        return replace(self, dockerignore=Path(path).resolve())

    def with_entrypoint(self, *command: str) -> Image:
        """The default command (`docker run IMAGE` with no arguments)."""
        self._buildable()
        return replace(self, entrypoint=command)


# --- values that end up in the Dockerfile, the build's shell lines or requirements.txt ------
# Each is checked against a strict pattern (or quoted) so that no value can add a Dockerfile
# instruction, a shell command or a pip option: one UsageError names the bad value instead.

_BASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")
_APT = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORKDIR = re.compile(r"/[A-Za-z0-9._@+/-]*")
_UNQUOTED_ENV = re.compile(r"[A-Za-z0-9_./:$-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _refuse(what: str, value: object, rule: str) -> UsageError:
    return UsageError(f"refusing {what} {value!r}: {rule}")


def _checked(check: Callable[[str], str], values: Iterable[str]) -> tuple[str, ...]:
    return tuple(check(v) for v in values)


def _checked_base(uri: str) -> str:
    if not isinstance(uri, str) or not _BASE.fullmatch(uri):
        raise _refuse("base image", uri, "give an image reference like python:3.11-slim")
    return uri


def _apt_name(name: str) -> str:
    if not isinstance(name, str) or not _APT.fullmatch(name):
        raise _refuse("apt package", name, "give one Debian package name, e.g. curl=7.88.1-10")
    return name


def _pip_name(name: str) -> str:
    """One PEP 508 requirement (`numpy>=2`, `pkg[extra]`, `pkg @ https://...`): never a pip
    option such as --index-url, and never more than one line of requirements.txt."""
    from packaging.requirements import InvalidRequirement, Requirement

    rule = "give one requirement like numpy==2.1.0 or 'name @ URL'; pip options are not allowed"
    if not isinstance(name, str) or name.lstrip().startswith("-") or _CONTROL.search(name):
        raise _refuse("pip package", name, rule)
    try:
        Requirement(name)
    except InvalidRequirement as exc:
        raise _refuse("pip package", name, rule) from exc
    return name


def _command(command: str) -> str:
    if not isinstance(command, str) or _CONTROL.search(command.replace("\t", " ")):
        raise _refuse(
            "command", command, "each command is one RUN line: join steps with && not newlines"
        )
    return command


def _env_pair(key: str, value: str) -> None:
    if not isinstance(key, str) or not _ENV_KEY.fullmatch(key):
        raise _refuse("environment variable name", key, "use letters, digits and _")
    if not isinstance(value, str) or _CONTROL.search(value):
        raise _refuse(f"value of environment variable {key}", value, "it must be one line of text")


def _workdir(path: str) -> str:
    """The WORKDIR also goes into a shell line of the build: strict characters only."""
    if not isinstance(path, str) or not _WORKDIR.fullmatch(path) or ".." in path.split("/"):
        raise _refuse("workdir", path, "use an absolute path of letters, digits and ._@+-/")
    return path


def _context_path(path: str, what: str) -> str:
    """A place in the build context (copied to the same place in the image): no `..`, so
    writing the context never lands outside its directory."""
    if not isinstance(path, str) or ".." in path.split("/"):
        raise _refuse(what, path, "a path in the image must not contain ..")
    return path


def _validate(image: Image) -> None:
    """Every value of a spec, however it was built (even `Image(...)` directly)."""
    _checked_base(image.base or "")
    _checked(_apt_name, image.apt_packages)
    _checked(_pip_name, image.pip_packages)
    _checked(_command, image.commands)
    for key, value in image.env_vars:
        _env_pair(key, value)
    _workdir(image.workdir)
    for folder in image.sources:
        _context_path(folder.dst, "destination")
        for rel, _ in folder.files or ():
            _context_path(rel, "file path")
    for _, dst in image.files:
        _context_path(dst, "destination")


def check_source_layout(image: Image, root_dir: str | os.PathLike[str]) -> None:
    """Flyte's rule, automated: with copy_contents_only=True the folder itself is root_dir;
    with False its parent is. A mismatch means imports fail inside the container."""
    root = Path(root_dir).resolve()
    for folder in image.sources:
        if folder.files is not None:
            continue
        expected = folder.src if folder.copy_contents_only else folder.src.parent
        if root == expected:
            continue
        example = next((p.stem for p in sorted(folder.src.glob("*.py"))), "app")
        where = (
            f"{folder.dst}/{example}.py"
            if folder.copy_contents_only
            else f"{folder.dst}/{folder.src.name}/{example}.py"
        )
        raise ImageError(
            f"with_source_folder({folder.src}, copy_contents_only={folder.copy_contents_only}) "
            f"puts {example}.py at {where}, but root_dir is {root}: imports written for that "
            f"root_dir fail in the container. Set root_dir to {expected}, or use "
            f"copy_contents_only={not folder.copy_contents_only}."
        )


# --- rendering -------------------------------------------------------------------------------


@dataclass
class BuildContext:
    dockerfile: str
    files: dict[str, bytes] = field(default_factory=dict)
    """Context path -> bytes (the Dockerfile included)."""
    modes: dict[str, int] = field(default_factory=dict)
    """Context path -> 0o755 for executables (0o644 otherwise)."""

    def tar(self) -> bytes:
        """The context as a deterministic tar stream (the bundle code's fixed metadata)."""
        parts = [
            tar_entry(path, self.modes.get(path, 0o644), data)
            for path, data in sorted(self.files.items())
        ]
        raw = b"".join(parts)
        return raw + end_of_archive(len(raw))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.tar()).hexdigest()

    def write(self, directory: Path) -> None:
        """Dockerfile and context files into `directory`, for `docker build directory`."""
        for path, data in self.files.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(self.modes.get(path, 0o644))


def _source_files(folder: SourceFolder, image: Image) -> dict[str, tuple[bytes, int]]:
    """(bytes, mode) of each file a source folder copies, by path under its destination."""
    if folder.files is not None:
        pairs = list(folder.files)
    else:
        ignore = image.dockerignore or folder.src / ".dockerignore"
        patterns = ignore.read_text().splitlines() if ignore.is_file() else []
        selection = select_files(folder.src, copy_style="all", exclude=patterns, force_root=True)
        pairs = [(f.path, f.source) for f in selection.files]
    return {
        rel: (Path(source).read_bytes(), archive_mode(os.stat(source).st_mode))
        for rel, source in pairs
    }


def render(
    image: Image,
    *,
    extra_ca_certs: Iterable[str | os.PathLike[str]] = (),
    wheels: Mapping[str, bytes] | None = None,
) -> BuildContext:
    """The Dockerfile and context for `image`. `extra_ca_certs` are CA files trusted during
    the build (a TLS-intercepting proxy); `wheels` (file name -> bytes) makes the build
    install Python packages from the context only, with no network (air-gapped)."""
    if image.ref_name is not None:
        raise ImageError(
            f"image reference {image.ref_name!r} is built elsewhere: nothing to render"
        )
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    if image.dockerfile is not None:
        if not image.dockerfile.is_file():
            raise ImageError(f"Dockerfile {image.dockerfile} does not exist")
        files["Dockerfile"] = image.dockerfile.read_bytes()
        return BuildContext(files["Dockerfile"].decode(), files)
    _validate(image)
    # Few instructions on purpose: each one is a layer, and some storage drivers copy the
    # whole filesystem per layer. Order: environment, system packages, Python packages and
    # the runtime's path file, commands, then code last.
    env = dict(image.env_vars)
    env.update({"PATH": f"{VENV}/bin:$PATH", "VIRTUAL_ENV": VENV, "PYTHONDONTWRITEBYTECODE": "1"})
    certs = [Path(c) for c in extra_ca_certs]
    if certs:
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        env.update({"PIP_CERT": bundle, "REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle})
    lines = [f"FROM {image.base}"]
    lines.append("ENV " + " ".join(f"{k}={_env_value(v)}" for k, v in env.items()))
    if certs:
        for cert in certs:
            files[f"certs/{cert.name}"] = cert.read_bytes()
        lines += [
            "COPY certs/ /usr/local/share/ca-certificates/",
            "RUN update-ca-certificates >/dev/null 2>&1 || "
            "cat /usr/local/share/ca-certificates/*.crt >> /etc/ssl/certs/ca-certificates.crt",
        ]
    if image.apt_packages:
        packages = " ".join(sorted(image.apt_packages))
        lines.append(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {packages} && rm -rf /var/lib/apt/lists/*"
        )
    # a .pth file, not PYTHONPATH: the runtime starts with `python -I`, which ignores it
    paths = [RUNTIME_DIR, image.workdir]
    python_steps = [
        f"python3 -m venv {VENV}",
        f'{VENV}/bin/python -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], '
        f"'flyte_jupyter_paths.pth').write_text('\\n'.join({paths!r}) + '\\n')\"",
    ]
    requirements = list(image.pip_packages)
    for path in image.requirements:
        requirements += [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    if requirements:
        files["build/requirements.txt"] = ("\n".join(requirements) + "\n").encode()
        if wheels is not None:
            for name, data in sorted(wheels.items()):
                files[f"build/wheels/{name}"] = data
            python_steps.append(
                f"{VENV}/bin/pip install --no-index --find-links /tmp/flyte-jupyter-build/wheels "
                "-r /tmp/flyte-jupyter-build/requirements.txt"
            )
        else:
            python_steps.append(
                f"{VENV}/bin/pip install --no-cache-dir "
                "-r /tmp/flyte-jupyter-build/requirements.txt"
            )
        lines.append("COPY build/ /tmp/flyte-jupyter-build/")
        python_steps.append("rm -rf /tmp/flyte-jupyter-build")
    lines.append("RUN " + " && ".join(python_steps))
    lines += [f"RUN {command}" for command in image.commands]
    # Runtime and code in one COPY of a tree laid out as the image's filesystem: one layer,
    # after every dependency layer, so a code change rebuilds only this.
    base = f"root/{RUNTIME_DIR.strip('/')}"
    files.update({f"{base}/{rel}": Path(src).read_bytes() for rel, src in runtime_files().items()})
    for folder in image.sources:
        target = folder.dst if folder.copy_contents_only else f"{folder.dst}/{folder.src.name}"
        for rel, (data, mode) in _source_files(folder, image).items():
            path = f"root/{target.strip('/')}/{rel}"
            files[path] = data
            modes[path] = mode
    for path, dst in image.files:
        files[f"root/{dst.strip('/')}"] = path.read_bytes()
        modes[f"root/{dst.strip('/')}"] = archive_mode(path.stat().st_mode)
    lines += ["COPY root/ /", f"WORKDIR {image.workdir}"]
    if image.entrypoint:
        lines.append(f"CMD {json.dumps(list(image.entrypoint))}")
    dockerfile = "\n".join(lines) + "\n"
    files["Dockerfile"] = dockerfile.encode()
    return BuildContext(dockerfile, files, modes)


def _env_value(value: str) -> str:
    """A JSON string (Docker expands `$VAR` inside double quotes too); plain `$VAR` paths
    stay unquoted, as before, so existing images keep their content hash."""
    if "$" in value and _UNQUOTED_ENV.fullmatch(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def default_tag(image: Image, context: BuildContext, version: str | None = None) -> str:
    """`<name>:<version>`, the version defaulting to the context's content hash."""
    return f"{image.name}:{version or context.digest[:16]}"


# --- building --------------------------------------------------------------------------------


def docker_client() -> Any:
    """A docker SDK client for the engine in the environment (DOCKER_HOST or the socket)."""
    try:
        import docker
    except ImportError as exc:
        raise UsageError(
            "building images needs the docker SDK: pip install 'flyte-jupyter[docker]'"
        ) from exc
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure to reach the engine means the same thing
        raise ImageError(
            f"no Docker engine answers ({exc}): start one (e.g. `dockerd`), or set DOCKER_HOST; "
            "`flyte-jupyter export --context-only DIR` needs no engine"
        ) from exc
    return client


def wheels_for(requirements: list[str], python_version: str | None) -> dict[str, bytes]:
    """Download wheels for an air-gapped build on this host (needs the network here only)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", tmp, *requirements]
        if python_version:
            cmd += ["--python-version", python_version, "--only-binary=:all:"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageError(
                f"pip download for an offline build failed: {done.stderr.strip()[-500:]}"
            )
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir())}


def render_for_build(
    image: Image, *, extra_ca_certs: Iterable[str | os.PathLike[str]] = (), airgapped: bool = False
) -> BuildContext:
    """`render`, with wheels downloaded here first for an air-gapped build."""
    wheels = None
    if airgapped:
        reqs = list(image.pip_packages)
        for path in image.requirements:
            reqs += ["-r", str(path)]  # pip reads its own format: comments, options, -r
        wheels = wheels_for(reqs, image.python_version) if reqs else {}
    return render(image, extra_ca_certs=extra_ca_certs, wheels=wheels)


def build_image(
    image: Image,
    *,
    version: str | None = None,
    log: Log | None = None,
    network: str | None = None,
    extra_ca_certs: Iterable[str | os.PathLike[str]] = (),
    airgapped: bool = False,
    push: bool = False,
    client: Any = None,
    context: BuildContext | None = None,
) -> str:
    """Build `image` (unless its tag exists) and return the tag. `log` receives build output
    as it streams; `network` is the build's network mode ("host" where the default bridge is
    off); `airgapped` builds with no network at all from wheels downloaded here."""
    if airgapped:
        network = "none"
    if context is None:
        context = render_for_build(image, extra_ca_certs=extra_ca_certs, airgapped=airgapped)
    tag = default_tag(image, context, version)
    client = client or docker_client()
    say = log or (lambda line: None)
    if _image_exists(client, tag):
        say(f"image {tag} exists: not rebuilt")
        return tag
    say(f"building {tag}")
    stream = client.api.build(
        fileobj=io.BytesIO(context.tar()),
        custom_context=True,
        tag=tag,
        rm=True,
        forcerm=True,
        network_mode=network,
        decode=True,
    )
    for chunk in stream:
        if "stream" in chunk:
            for line in chunk["stream"].splitlines():
                if line.strip():
                    say(line)
        if "error" in chunk:
            raise ImageError(f"building {tag} failed: {chunk['error'].strip()}")
    if push:
        repository, _, tag_part = tag.rpartition(":")
        for chunk in client.api.push(repository, tag=tag_part, stream=True, decode=True):
            if "error" in chunk:
                raise ImageError(f"pushing {tag} failed: {chunk['error']}")
    return tag


def _image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True
