"""The flyte executor against a local Flyte control-plane emulator (tests/flyte_emulator.py):
the real flyte SDK client, flyteidl2's own server stubs, signed uploads to a moto S3 server and
pods that are real `a0` processes. Nothing leaves the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flyte_emulator import FlyteEmulator

PROJECT = {
    "app.py": (
        "from shop.pricing import total\n\n\n"
        "def main(region: str = 'eu'):\n"
        "    print('pricing in', region)\n"
        "    return total([10, 20.5], region)\n\n\n"
        "def fail():\n"
        "    from shop.pricing import explode\n"
        "    explode()\n"
    ),
    "shop/__init__.py": "",
    "shop/pricing.py": (
        "def total(prices, region):\n"
        "    from shop.rates import RATES  # lazy: only our selection ships it\n"
        "    return round(sum(prices) * RATES[region], 2)\n\n\n"
        "def explode():\n"
        "    raise ValueError('price list is empty')\n"
    ),
    "shop/rates.py": "RATES = {'eu': 1.2, 'us': 1.0}\n",
}


@pytest.fixture
def emulator(s3_server, tmp_path) -> Iterator[FlyteEmulator]:
    with FlyteEmulator(tmp_path / "emulator", s3_server) as emu:
        yield emu


def cli_env(emu: FlyteEmulator) -> dict[str, str]:
    env = {**os.environ, **emu.client_env}
    env["FLYTE_JUPYTER_FLYTE_CONFIG"] = str(emu.config_path)
    return env


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flyte_jupyter", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=90,
    )  # fmt: skip


def test_project_function_runs_as_a_flyte_task(tree, emulator, tmp_path):
    root = tree(PROJECT)
    env = cli_env(emulator)
    started = time.monotonic()
    target = f"{root}/app.py:main"
    ok = cli(env, tmp_path, "run", target, "--executor", "flyte", "--arg", "region=us")
    print(f"run FILE:FN through the emulator: {time.monotonic() - started:.1f}s")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "30.5"
    assert "pricing in us" in ok.stdout
    assert "Flyte run r" in ok.stderr
    (request,) = emulator.create_run_requests
    args = list(request.task_spec.task_template.container.args)
    assert args[:2] == ["python", "-c"] and "--tgz" not in args
    assert args[args.index("mod") + 1 :] == ["flyte_jupyter.runtime.flyte_task", "instance", "run"]
    run_name = ok.stderr.split("Flyte run ", 1)[1].split(":", 1)[0]
    assert emulator.run_phase(run_name) == "SUCCEEDED"
