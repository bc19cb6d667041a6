"""The flyte executor's front doors against the control-plane emulator (tests/flyte_emulator.py):
the image check before submitting, per-run knobs as CLI flags, detached cells fetched with
%flyte_result, and run listings that name the Flyte run and its console URL."""

from __future__ import annotations

import json
import time

import pytest
from flyte_emulator import FlyteEmulator
from test_flyte import NOTEBOOK_PROJECT, PROJECT, cli, cli_env

SLIM = "python:3.11-slim-bookworm"
"""A local base image with Python and no flyte."""


def _local_image(name: str) -> None:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.images.get(name)
    except Exception as exc:
        pytest.skip(f"{name} is not on a Docker engine here ({exc})")


def test_image_without_flyte_fails_before_anything_is_submitted(tree, flyte_emulator, tmp_path):
    _local_image(SLIM)
    root = tree({**PROJECT, "app.py": PROJECT["app.py"] + "\n\ndef cfg():\n    import yaml\n"})
    env = cli_env(flyte_emulator)
    started = time.monotonic()
    out = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte", "--image", SLIM)
    took = time.monotonic() - started
    print(f"exit {out.returncode} in {took:.1f}s: {out.stderr.strip()}")
    import flyte
    import yaml

    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    pins = f"'PyYAML=={yaml.__version__}', 'flyte=={flyte.__version__}'"
    assert f"image {SLIM} lacks packages" in out.stderr
    assert f".with_pip_packages({pins})" in out.stderr
    calls = [c for c in flyte_emulator.calls if c in ("CreateRun", "CreateUploadLocation")]
    print(f"CreateRun requests: {len(flyte_emulator.create_run_requests)}, uploads: "
          f"{len(flyte_emulator.uploads)}, calls {calls}")  # fmt: skip
    assert flyte_emulator.create_run_requests == [] and flyte_emulator.uploads == []
    runs = cli(env, tmp_path, "runs")
    print("history:", runs.stdout.strip())
    assert runs.stdout.strip() == "no runs yet"


def test_image_with_flyte_passes_the_check(flyte_pod_image):
    from flyte_jupyter.core.executors.flyte import check_image
    from flyte_jupyter.core.submit import RunSpec

    spec = RunSpec(
        run_id="r1", entry="app:main", store="", run_dir="", digest=None, bundle_url=None,
        version="v", executor="flyte", python_path=["."], root_dir=None, copy_style="auto",
        client={"python": "3.11", "distributions": {}}, created="",
    )  # fmt: skip
    started = time.monotonic()
    check_image(spec, flyte_pod_image)  # the pod image holds flyte: nothing raised
    first = time.monotonic() - started
    started = time.monotonic()
    check_image(spec, flyte_pod_image)
    again = time.monotonic() - started
    print(f"image check: {first:.2f}s, again (cached by image id): {again:.2f}s")
    assert again < first


def test_cli_flags_reach_the_task_spec(tree, flyte_emulator, tmp_path):
    root = tree(PROJECT)
    flags = [
        "--resources", "cpu=2,memory=4Gi,gpu=1", "--secret", "api-key",
        "--secret", "db-password=DB_PASSWORD", "--retries", "3", "--project", "ml",
        "--domain", "staging", "--task-timeout", "900",
    ]  # fmt: skip
    run = cli(cli_env(flyte_emulator), tmp_path, "run", f"{root}/app.py:main",
              "--executor", "flyte", *flags, "--detach")  # fmt: skip
    assert run.returncode == 0, run.stderr
    (request,) = flyte_emulator.create_run_requests
    template = request.task_spec.task_template
    resources = {r.name: r.value for r in template.container.resources.requests}
    secrets = [(s.key, s.env_var) for s in template.security_context.secrets]
    print("resources:", resources, "secrets:", secrets, "retries:", template.metadata.retries)
    assert sorted(resources.values()) == ["1", "2", "4Gi"]
    assert secrets == [("api-key", "API_KEY"), ("db-password", "DB_PASSWORD")]  # flyte's default
    assert template.metadata.retries.retries == 3
    assert template.metadata.timeout.seconds == 900
    assert (template.id.project, template.id.domain) == ("ml", "staging")
    assert (request.project_id.name, request.project_id.domain) == ("ml", "staging")


def test_detached_cell_result_and_run_listings_name_the_flyte_run(
    tmp_path, flyte_emulator: FlyteEmulator
):
    from conftest import write_tree
    from kernel import extension_kernel

    from flyte_jupyter.core import history

    project = write_tree(tmp_path / "nb", NOTEBOOK_PROJECT)
    with extension_kernel(project, flyte_emulator.client_env) as kernel:
        kernel.ok(f"%flyte_config flyte_config={flyte_emulator.config_path} executor=flyte")
        kernel.ok("from shop.pricing import with_tax")
        detached = kernel.ok("%%flyte_run --detach\ntotal = with_tax(10)\ntotal")
        assert detached.result.startswith("<Run "), detached.result  # the handle, at once
        record = history.recent()[0]
        assert record.executor == "flyte"
        fetched = kernel.ok(f"%flyte_result {record.id}")
        print("detached cell, then %flyte_result:", fetched.result)
        assert fetched.result == "12.0", fetched.stderr
        assert kernel.ok("total + 1").result == "13.0"  # the assigned name came back
        shown_runs = kernel.ok("%flyte_runs 1").displays[0]
        listing, listing_html = shown_runs["text/plain"], shown_runs["text/html"]
        runs = cli(cli_env(flyte_emulator), tmp_path, "runs", "show", record.id)
    assert runs.returncode == 0, runs.stderr
    shown = json.loads(runs.stdout)
    remote = shown["flyte"]
    print("runs show:", remote)
    assert flyte_emulator.run_phase(remote["name"]) == "SUCCEEDED"
    assert remote["url"].startswith("http") and remote["name"] in remote["url"]
    assert (remote["project"], remote["domain"]) == (
        flyte_emulator.project,
        flyte_emulator.domain,
    )
    cli_listing = cli(cli_env(flyte_emulator), tmp_path, "runs").stdout
    print(listing, cli_listing, sep="\n")
    assert remote["name"] in listing and remote["name"] in cli_listing
    assert f"  {record.id}  {remote['url']}" in listing and remote["url"] in cli_listing
    assert f'<a href="{remote["url"]}"' in listing_html
