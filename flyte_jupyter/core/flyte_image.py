"""Our `Image` spec as a `flyte.Image`, for users who want Flyte's image builder to build it.

The spec uses Flyte's vocabulary already, so each part maps to one Flyte layer, in the order our
own Dockerfile uses (environment, apt, pip, requirements, commands, code, workdir). Parts Flyte
has no layer for raise one UsageError naming them, instead of an image that silently differs.
`flyte` is imported only when a translation is asked for.
"""

from __future__ import annotations

import posixpath
from typing import Any

from .errors import UsageError
from .image import DEFAULT_REPOSITORY, WORKDIR, Image


def to_flyte_image(image: Image) -> Any:
    """The `flyte.Image` that builds what `image` describes."""
    import flyte

    unsupported = _unsupported(image)
    if unsupported:
        raise UsageError(
            "this image cannot be translated to flyte.Image: "
            + "; ".join(unsupported)
            + ". Build it with flyte-jupyter (build_image) and pass its URI, or drop those parts"
        )
    if image.ref_name is not None:
        return flyte.Image.from_ref_name(image.ref_name)
    layered = any(
        [image.env_vars, image.apt_packages, image.pip_packages, image.requirements,
         image.commands, image.dockerignore, image.sources, image.files,
         image.workdir != WORKDIR]
    )  # fmt: skip
    # Flyte builds only named images: ours is named (flyte-jupyter by default) when it adds
    # layers; a bare base stays Flyte's released image (or the base URI), nothing to build.
    name = image.name if layered or image.name != DEFAULT_REPOSITORY else None
    if image.base == _debian_base(image.python_version):
        major, minor = (int(p) for p in str(image.python_version).split(".")[:2])
        out = flyte.Image.from_debian_base(python_version=(major, minor), name=name)
    else:
        out = flyte.Image.from_base(str(image.base))
        if name:
            out = out.clone(name=name, extendable=True)
    if image.env_vars:
        out = out.with_env_vars(dict(image.env_vars))
    if image.apt_packages:
        out = out.with_apt_packages(*image.apt_packages)
    if image.pip_packages:
        out = out.with_pip_packages(*image.pip_packages)
    for requirements in image.requirements:
        out = out.with_requirements(requirements)
    if image.commands:
        out = out.with_commands(list(image.commands))
    if image.dockerignore is not None:
        out = out.with_dockerignore(image.dockerignore)
    for folder in image.sources:
        if folder.copy_contents_only:
            out = out.with_source_folder(folder.src, dst=folder.dst, copy_contents_only=True)
        else:  # the folder itself, by name, under dst
            dst = posixpath.join(folder.dst, folder.src.name)
            out = out.with_source_folder(folder.src, dst=dst)
    for path, dst in image.files:
        out = out.with_source_file(path, dst=posixpath.dirname(dst) or "/")
    if image.workdir != WORKDIR:
        out = out.with_workdir(image.workdir)
    return out


def _debian_base(python_version: str | None) -> str | None:
    """The base `Image.from_debian_base` gives (None without a Python version)."""
    return f"python:{python_version}-slim-bookworm" if python_version else None


def _unsupported(image: Image) -> list[str]:
    """The parts of `image` flyte.Image has no layer for, each named with why."""
    out = []
    if image.dockerfile is not None:
        out.append(
            f"from_dockerfile ({image.dockerfile}): flyte.Image.from_dockerfile needs a "
            "registry; call it directly"
        )
    if image.entrypoint:
        out.append(f"with_entrypoint {list(image.entrypoint)}: Flyte sets the pod's command")
    for folder in image.sources:
        if folder.files is not None:
            out.append(f"with_files into {folder.dst}: Flyte copies folders or single files")
    for path, dst in image.files:
        if posixpath.basename(dst) != path.name:
            out.append(f"with_source_file {path} as {dst}: Flyte copies a file under its own name")
    return out
