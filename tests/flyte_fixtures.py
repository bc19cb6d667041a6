"""Pytest fixtures for the Flyte control-plane emulator (tests/flyte_emulator.py).

- `flyte_emulator`: process pods; one emulator per session, reset for every test (no calls,
  uploads or runs carried over, a fresh client HOME, the previous test's pods killed).
- `flyte_pod_image`: the docker pod image tag (flyte + test packages), built once and cached.
- `flyte_emulator_docker`: the same with pods as containers on the real Docker engine;
  skips with the reason when no engine answers or no image can be built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import servers
from flyte_pod_image import PodImageUnavailable, build_pod_image

if TYPE_CHECKING:  # imported in the fixtures: boto3 and flyteidl2 cost ~1 s at start-up
    from flyte_emulator import FlyteEmulator


@pytest.fixture(scope="session")
def _flyte_emulator_session(
    s3_server: servers.Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlyteEmulator]:
    from flyte_emulator import FlyteEmulator

    with FlyteEmulator(tmp_path_factory.mktemp("flyte-emulator"), s3_server) as emulator:
        yield emulator


@pytest.fixture
def flyte_emulator(_flyte_emulator_session: FlyteEmulator) -> Iterator[FlyteEmulator]:
    _flyte_emulator_session.reset()
    yield _flyte_emulator_session
    _flyte_emulator_session.reset()


@pytest.fixture(scope="session")
def flyte_pod_image() -> str:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers here ({exc}); scripts/docker-engine.sh starts one")
    try:
        return build_pod_image(client)
    except PodImageUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def _flyte_emulator_docker_session(
    s3_server: servers.Server, tmp_path_factory: pytest.TempPathFactory, flyte_pod_image: str
) -> Iterator[FlyteEmulator]:
    from flyte_emulator import FlyteEmulator

    workdir = tmp_path_factory.mktemp("flyte-emulator-docker")
    with FlyteEmulator(workdir, s3_server, pod_mode="docker", image=flyte_pod_image) as emulator:
        yield emulator


@pytest.fixture
def flyte_emulator_docker(
    _flyte_emulator_docker_session: FlyteEmulator,
) -> Iterator[FlyteEmulator]:
    _flyte_emulator_docker_session.reset()
    yield _flyte_emulator_docker_session
    _flyte_emulator_docker_session.reset()
