"""Our Image spec translated to flyte.Image layers: the same layers a user would write by hand,
and one line naming what Flyte has no layer for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flyte_jupyter.core.errors import UsageError
from flyte_jupyter.core.flyte_image import to_flyte_image
from flyte_jupyter.core.image import Image


@pytest.fixture
def project(tree) -> Path:
    return tree(
        {
            "requirements.txt": "requests==2.32.3\n",
            "src/shop/__init__.py": "",
            "conf/settings.toml": "a = 1\n",
            "scripts/entry.sh": "echo hi\n",
            ".dockerignore": "*.log\n",
        }
    )


def test_a_representative_spec_equals_the_hand_built_flyte_image(project):
    import flyte

    ours = (
        Image.from_debian_base("3.11", name="shop")
        .with_env_vars({"MODE": "prod", "LOG_LEVEL": "info"})
        .with_apt_packages("curl", "git")
        .with_pip_packages("pandas==2.2.2", "scikit-learn")
        .with_requirements(project / "requirements.txt")
        .with_commands("mkdir -p /data", "echo ready")
        .with_dockerignore(project / ".dockerignore")
        .with_source_folder(project / "src", "/app")
        .with_source_folder(project / "conf", "/etc/shop", copy_contents_only=True)
        .with_source_file(project / "scripts/entry.sh", "/opt/bin/entry.sh")
        .with_workdir("/srv")
    )
    theirs = (
        flyte.Image.from_debian_base(python_version=(3, 11), name="shop")
        .with_env_vars({"LOG_LEVEL": "info", "MODE": "prod"})
        .with_apt_packages("curl", "git")
        .with_pip_packages("pandas==2.2.2", "scikit-learn")
        .with_requirements(project / "requirements.txt")
        .with_commands(["mkdir -p /data", "echo ready"])
        .with_dockerignore(project / ".dockerignore")
        .with_source_folder(project / "src", "/app/src")
        .with_source_folder(project / "conf", "/etc/shop", copy_contents_only=True)
        .with_source_file(project / "scripts/entry.sh", "/opt/bin")
        .with_workdir("/srv")
    )
    translated = to_flyte_image(ours)
    print("layers:", *[type(layer).__name__ for layer in translated._layers])
    assert translated._layers == theirs._layers
    assert (translated.base_image, translated.name, translated.python_version) == (
        theirs.base_image, theirs.name, theirs.python_version,
    )  # fmt: skip
    assert translated == theirs


def test_base_uri_and_reference_names():
    import flyte

    layered = Image.from_base("ghcr.io/acme/base:1").with_pip_packages("x")
    by_hand = (
        flyte.Image.from_base("ghcr.io/acme/base:1")
        .clone(name="flyte-jupyter", extendable=True)
        .with_pip_packages("x")
    )
    assert to_flyte_image(layered) == by_hand
    bare = to_flyte_image(Image.from_base("ghcr.io/acme/base:1"))
    assert bare == flyte.Image.from_base("ghcr.io/acme/base:1")
    assert bare.uri == "ghcr.io/acme/base:1"  # nothing for Flyte to build
    assert to_flyte_image(Image.from_ref_name("app")) == flyte.Image.from_ref_name("app")
    plain = to_flyte_image(Image.from_debian_base())
    version = sys.version_info[:2]
    assert plain == flyte.Image.from_debian_base(python_version=version)


def test_parts_flyte_has_no_layer_for_are_named(project):
    spec = (
        Image.from_base("python:3.11-slim")
        .with_entrypoint("python", "-m", "app")
        .with_source_file(project / "scripts/entry.sh", "/opt/bin/start.sh")
        .with_files({"shop/__init__.py": project / "src/shop/__init__.py"}, "/code")
    )
    with pytest.raises(UsageError) as caught:
        to_flyte_image(spec)
    message = str(caught.value)
    print(message)
    assert "\n" not in message
    assert "with_entrypoint ['python', '-m', 'app']" in message
    assert "entry.sh as /opt/bin/start.sh" in message
    assert "with_files into /code" in message
    with pytest.raises(UsageError, match="from_dockerfile"):
        to_flyte_image(Image.from_dockerfile(project / "Dockerfile"))
