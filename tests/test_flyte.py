"""The flyte executor against a local Flyte control-plane emulator (tests/flyte_emulator.py):
the real flyte SDK client, flyteidl2's own server stubs, signed uploads to a moto S3 server and
pods that are real `a0` processes. Nothing leaves the machine."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
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
        "    explode()\n\n\n"
        "def slow():\n"
        "    import time\n"
        "    print('step 1', flush=True)\n"
        "    time.sleep(4)\n"
        "    print('step 2', flush=True)\n"
        "    return 'done'\n\n\n"
        "def sleepy():\n"
        "    import time\n"
        "    time.sleep(120)\n"
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
def emulator(flyte_emulator) -> FlyteEmulator:
    """Pods as local `a0` processes (tests/flyte_fixtures.py)."""
    return flyte_emulator


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


def test_failure_dedup_and_version(tree, emulator, tmp_path):
    root = tree(PROJECT)
    env = cli_env(emulator)
    first = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte")
    assert first.returncode == 0, first.stderr
    uploads = len(emulator.uploads)
    again = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte")
    assert again.returncode == 0, again.stderr
    print(f"uploads for the unchanged re-run: {len(emulator.uploads) - uploads}")
    assert len(emulator.uploads) == uploads  # 0 code bytes: the data plane has the bundle
    one, two = (r.task_spec.task_template.id.version for r in emulator.create_run_requests)
    assert one == two
    bad = cli(env, tmp_path, "run", f"{root}/app.py:fail", "--executor", "flyte")
    assert bad.returncode == 1
    assert "ValueError: price list is empty" in bad.stderr
    assert 'File "shop/pricing.py", line 7, in explode' in bad.stderr
    run_name = bad.stderr.split("Flyte run ", 1)[1].split(":", 1)[0]
    assert emulator.run_phase(run_name) == "FAILED"
    (root / "shop/rates.py").write_text("RATES = {'eu': 2.0, 'us': 1.0}\n")
    edited = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte")
    assert edited.stdout.splitlines()[-1] == "61.0", edited.stderr
    assert emulator.create_run_requests[-1].task_spec.task_template.id.version != one


def test_tampered_bundle_in_the_data_plane_runs_nothing(tree, emulator, tmp_path):
    root = tree({**PROJECT, "shop/rates.py": "RATES = {'eu': 1.5, 'us': 1.0}\n"})
    env = cli_env(emulator)
    assert cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte").returncode == 0
    digest = list(emulator.create_run_requests[0].task_spec.task_template.container.args)[6]
    (bundle,) = [u for u in emulator.uploads if u["filename"] == digest[7:] + ".tar.gz"]
    bucket, key = bundle["native_url"].removeprefix("s3://").split("/", 1)
    original = emulator._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(original)) as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("shop/rates.py"):
                data = b"print('TAMPERED CODE RAN')\nRATES = {'eu': 9, 'us': 9}\n"
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    emulator._s3.put_object(Bucket=bucket, Key=key, Body=out.getvalue())
    run = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte")
    run_name = run.stderr.split("Flyte run ", 1)[1].split(":", 1)[0]
    print(f"tampered run: exit {run.returncode}, phase {emulator.run_phase(run_name)}")
    assert run.returncode == 1, run.stderr
    assert "does not match" in run.stderr or "modified or corrupted in storage" in run.stderr
    assert "TAMPERED CODE RAN" not in emulator.pod_log(run_name) + run.stdout
    assert emulator.run_phase(run_name) == "FAILED"


def test_copy_style_none_uses_the_mapped_image_and_version(tree, emulator, tmp_path):
    root = tree(PROJECT)
    env = cli_env(emulator)
    env["FLYTE_JUPYTER_IMAGES"] = '{"app": "registry.example/app:v7"}'
    args = ["--executor", "flyte", "--copy-style", "none", "--version", "v7", "--image", "app"]
    run = cli(env, tmp_path, "run", f"{root}/app.py:main", *args, "--detach")
    assert run.returncode == 0, run.stderr
    (request,) = emulator.create_run_requests
    template = request.task_spec.task_template
    assert template.container.image == "registry.example/app:v7"
    assert template.id.version == "v7"
    args = list(template.container.args)
    assert "--tgz" not in args and args[3:7] == [args[3], args[4], "-", "-"]
    print(f"code uploads with copy_style none: {len(emulator.uploads) - 1} (runtime only: 1)")
    assert [u["filename"].startswith(tuple("0123456789abcdef")) for u in emulator.uploads] == [True]


def test_our_task_spec_is_flytes_own_but_for_version_bundle_and_bootstrap():
    import flyte
    from google.protobuf import json_format

    from flyte_jupyter.core.executors import flyte as flyte_executor
    from flyte_jupyter.runtime import flyte_task

    flyte.init(project="p", domain="d", root_dir=flyte_executor._PACKAGE_DIR.parent)
    theirs = (
        flyte.with_runcontext(
            mode="remote", dry_run=True, version="v1", interactive_mode=False,
            copy_style="loaded_modules",
        )
        .run(flyte_task.run, entry="a:b", inputs="", spec="{}")
        .task_spec
    )  # fmt: skip
    target = flyte_executor.Target(None, "dns:///x:1", True, "p", "d", None)
    ours = flyte_executor.build_task_spec(
        flyte_task.run, version="v1", image=None, bundle_url="s3://b/ours.tar.gz", target=target
    )
    differ: list[str] = []

    def walk(a, b, path=""):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{path}.{k}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            differ.append(path)

    walk(json_format.MessageToDict(theirs), json_format.MessageToDict(ours))
    print("differences:", differ)
    # dry runs leave project/domain empty (the submit fills them); the bundle URL is ours
    assert differ == [
        ".taskTemplate.container.args[20]",
        ".taskTemplate.id.domain",
        ".taskTemplate.id.project",
        ".taskTemplate.metadata.codeBundleUri",
    ]
    args = list(ours.task_template.container.args)
    assert args[args.index("--tgz") + 1] == "s3://b/ours.tar.gz"
    flyte_executor.with_bootstrap(ours, "s3://b/rt.tar.gz", "ab" * 32, "sha256:" + "cd" * 32)
    booted = list(ours.task_template.container.args)
    assert booted[:2] == ["python", "-c"] and booted[3:7] == [
        "s3://b/rt.tar.gz", "ab" * 32, "s3://b/ours.tar.gz", "sha256:" + "cd" * 32
    ]  # fmt: skip
    assert booted[7:] == [a for a in args if a not in ("--tgz", "s3://b/ours.tar.gz")]


def test_no_config_unreachable_endpoint_missing_extra_are_one_line(tree, tmp_path):
    root = tree(PROJECT)
    home = tmp_path / "home"
    home.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "UCTL"))}
    base.update(HOME=str(home), FLYTE_JUPYTER_DATA_DIR=os.environ["FLYTE_JUPYTER_DATA_DIR"])
    base["FLYTE_JUPYTER_CACHE_DIR"] = os.environ["FLYTE_JUPYTER_CACHE_DIR"]
    port = __import__("servers").free_port()
    cases = {
        "no config": (base, "no Flyte configuration found"),
        "unreachable": (
            {**base, "FLYTE_JUPYTER_ENDPOINT": f"dns:///127.0.0.1:{port}",
             "FLYTE_JUPYTER_INSECURE": "true", "FLYTE_JUPYTER_PROJECT": "p",
             "FLYTE_JUPYTER_DOMAIN": "d"},
            f"cannot reach the Flyte endpoint dns:///127.0.0.1:{port}",
        ),
    }  # fmt: skip
    for label, (env, message) in cases.items():
        started = time.monotonic()
        out = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte")
        took = time.monotonic() - started
        print(f"{label}: exit {out.returncode} in {took:.1f}s: {out.stderr.strip()}")
        assert out.returncode != 0 and message in out.stderr
        assert out.stderr.strip().count("\n") == 0 and took < 15
    boot = (
        "import sys; sys.modules['flyte'] = None; from flyte_jupyter.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", boot, "run", f"{root}/app.py:main", "--executor", "flyte"],
        capture_output=True, text=True, env=base, cwd=tmp_path,
    )  # fmt: skip
    print(f"missing extra: exit {out.returncode}: {out.stderr.strip()}")
    assert 'pip install "flyte-jupyter[flyte]"' in out.stderr
    assert out.stderr.strip().count("\n") == 0
    runs = cli(base, tmp_path, "runs")
    print("history after the three:", runs.stdout.strip())
    assert runs.stdout.strip() == "no runs yet"


NOTEBOOK_PROJECT = {
    "pyproject.toml": "[project]\nname='nb-project'\n",
    "shop/__init__.py": "",
    "shop/pricing.py": "def with_tax(x):\n    return round(x * 1.2, 2)\n",
    "shop/discounts.py": "def best(prices):\n    return 0.5 if len(prices) > 2 else 0.0\n",
}


def test_notebook_cell_runs_as_a_flyte_task_and_interrupt_aborts(tmp_path, emulator):
    from conftest import write_tree
    from kernel import extension_kernel

    from flyte_jupyter.core import history

    project = write_tree(tmp_path / "nb", NOTEBOOK_PROJECT)
    with extension_kernel(project, emulator.client_env) as kernel:
        kernel.ok(f"%flyte_config flyte_config={emulator.config_path} executor=flyte")
        kernel.ok(
            "from shop.pricing import with_tax\n\n"
            "def discount(prices):\n"
            "    from shop.discounts import best  # lazy: only our selection ships it\n"
            "    return best(prices)\n"
        )
        cell = "%%flyte_run\ntotal = with_tax(10) + discount([1, 2, 3])\ntotal"
        first = kernel.ok(cell)
        assert first.result == "12.5", first.stderr
        # the run's name and console link are in the status display, not a stderr band
        status = next(d["text/plain"] for d in first.displays if "flyte-jupyter run" in str(d))
        (run_name,) = [r.id.name for r in emulator._runs.values()]
        print("status display:", status, "| stderr:", repr(first.stderr))
        assert "Flyte run" not in first.stderr and "http" in status and run_name in status
        assert first.stderr == "", first.stderr  # no red band at all (trio's import warning)
        assert kernel.ok("total * 2").result == "25.0"  # the assigned name came back
        v1 = history.recent()[0].version
        (project / "shop/discounts.py").write_text("def best(prices):\n    return 0.25\n")
        assert kernel.ok(cell).result == "12.25"
        v2 = history.recent()[0].version
        uploads = len(emulator.uploads)
        assert kernel.ok(cell).result == "12.25"
        print(f"versions: {v1} -> {v2} -> {history.recent()[0].version}; "
              f"uploads for the unchanged re-run: {len(emulator.uploads) - uploads}")  # fmt: skip
        assert v1 != v2 == history.recent()[0].version
        assert len(emulator.uploads) == uploads
        failed = kernel.execute("%%flyte_run --executor flyte\nwith_tax(None)")
        assert failed.error is not None and failed.error["ename"] == "TypeError"  # the remote type
        text = re.sub(r"\x1b\[[0-9;]*m", "", failed.error_text)
        assert "unsupported operand" in text and "with_tax" in text and "In[" in text, text
        assert "flyte-jupyter-error" not in failed.stdout + failed.stderr
        msg_id = kernel.client.execute("%%flyte_run --executor flyte\nimport time\ntime.sleep(120)")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [r for r in emulator._runs.values() if emulator.pod_alive(r.id.name)]
            if running:
                break
            time.sleep(0.2)
        (run,) = running
        time.sleep(1)
        kernel.interrupt()
        interrupted = time.monotonic()
        while True:
            msg = kernel.client.get_iopub_msg(timeout=60)
            content = msg["content"]
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and content.get("execution_state") == "idle"
            ):
                break
        name = run.id.name
        print(f"interrupt to idle cell: {time.monotonic() - interrupted:.1f}s")
        assert time.monotonic() - interrupted < 15
        phase, alive = emulator.run_phase(name), emulator.pod_alive(name)
        print(f"after interrupt: {phase}, pod alive {alive}, {history.recent()[0].status}")
        assert emulator.run_phase(name) == "ABORTED"
        assert not emulator.pod_alive(name)
        assert history.recent()[0].status == "cancelled"
        assert "AbortRun" in emulator.calls


def test_project_function_in_a_container_pod_with_only_flyte(tree, flyte_emulator_docker, tmp_path):
    """The pod image holds flyte and test packages, not flyte-jupyter: our runtime travels."""
    root = tree(PROJECT)
    env = cli_env(flyte_emulator_docker)
    ok = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "36.6"
    run_name = ok.stderr.split("Flyte run ", 1)[1].split(":", 1)[0]
    log = flyte_emulator_docker.pod_log(run_name)
    print("container pod log tail:", log.strip().splitlines()[-2:])
    assert flyte_emulator_docker.run_phase(run_name) == "SUCCEEDED"


def test_run_knobs_reach_the_task_spec(tree, emulator, tmp_path):
    root = tree(PROJECT)
    env = cli_env(emulator)
    env.update(
        FLYTE_JUPYTER_RESOURCES="cpu=2,memory=4Gi",
        FLYTE_JUPYTER_SECRETS="db-password=DB_PASSWORD,api-key",
        FLYTE_JUPYTER_RETRIES="2",
        FLYTE_JUPYTER_TIMEOUT="600",
        FLYTE_JUPYTER_PROJECT="ml",
        FLYTE_JUPYTER_DOMAIN="staging",
    )
    run = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte",
              "--name", "nightly-1", "--env", "MODE=fast", "--detach")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Flyte run nightly-1:" in run.stderr
    (request,) = emulator.create_run_requests
    template = request.task_spec.task_template
    assert (request.run_id.name, request.run_id.project, request.run_id.domain) == (
        "nightly-1", "ml", "staging"
    )  # fmt: skip
    assert (template.id.project, template.id.domain) == ("ml", "staging")
    resources = {r.name: r.value for r in template.container.resources.requests}
    print("resources:", resources)
    assert set(resources.values()) >= {"2", "4Gi"}
    secrets = [(s.key, s.env_var) for s in template.security_context.secrets]
    print("secrets:", secrets)
    assert [key for key, _ in secrets] == ["db-password", "api-key"]
    assert secrets[0][1] == "DB_PASSWORD"
    assert template.metadata.retries.retries == 2
    assert template.metadata.timeout.seconds == 600
    envs = {kv.key: kv.value for kv in request.run_spec.envs.values}
    assert envs["MODE"] == "fast"


def test_logs_stream_while_the_flyte_run_runs(tree, emulator, tmp_path):
    root = tree(PROJECT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyte_jupyter", "run", f"{root}/app.py:slow", "--executor=flyte"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cli_env(emulator),
        cwd=tmp_path,
    )  # fmt: skip
    seen: dict[str, float] = {}
    for line in proc.stdout:
        seen[line.strip()] = time.monotonic()
    proc.wait(30)
    gap = seen["step 2"] - seen["step 1"]
    print(f"'step 1' arrived {gap:.1f}s before 'step 2'")
    assert gap > 2.5 and list(seen)[-1] == '"done"'


def test_an_s3_store_works_beside_flyte_and_detached_runs_are_followed(
    tree, emulator, s3_server, tmp_path
):
    """Importing flyte swaps fsspec's s3 implementation process-wide (FLYTE-NOTES pitfall 1):
    the store must keep working; and a detached Flyte run is followed from another process."""
    import boto3

    bucket = f"store-{os.getpid()}-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket=bucket)
    root = tree(PROJECT)
    env = cli_env(emulator)
    store = ["--store", f"s3://{bucket}", "--storage-option", f"endpoint_url={s3_server.url}"]
    ok = cli(env, tmp_path, "run", f"{root}/app.py:main", "--executor", "flyte", *store)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "36.6"
    detached = cli(env, tmp_path, "run", f"{root}/app.py:sleepy", "--executor=flyte", "--detach")
    run_id = detached.stdout.strip()
    run_name = detached.stderr.split("Flyte run ", 1)[1].split(":", 1)[0]
    while emulator.run_phase(run_name) != "RUNNING":
        time.sleep(0.2)
    listing = cli(env, tmp_path, "runs").stdout
    print(listing)
    assert run_id in listing and run_name in listing
    assert "running" in next(line for line in listing.splitlines() if run_id in line)
    cancel = cli(env, tmp_path, "runs", "cancel", run_id)
    assert cancel.returncode == 0, cancel.stderr
    print(f"after runs cancel: {cancel.stdout.strip()}, Flyte says {emulator.run_phase(run_name)}")
    assert "cancelled" in cancel.stdout and emulator.run_phase(run_name) == "ABORTED"


def _hwm_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def test_big_values_travel_as_files_not_inline(tmp_path, emulator):
    """A 24 MB value goes into a Flyte cell and comes back: as `flyte.io.File`s through the
    data plane (the emulator, like a cluster, refuses inline data over 10 MiB), intact, while
    small values stay inline."""
    _big_values_round_trip(tmp_path, emulator)


@pytest.mark.slow
def test_big_values_in_a_container_pod_with_only_flyte(tmp_path, flyte_emulator_docker):
    """The same in a pod image holding only flyte: the pod's side needs nothing of ours."""
    _big_values_round_trip(tmp_path, flyte_emulator_docker)


def _big_values_round_trip(tmp_path: Path, emulator: FlyteEmulator) -> None:
    from conftest import write_tree
    from flyteidl2.task import common_pb2
    from kernel import extension_kernel

    project = write_tree(tmp_path / "nb", NOTEBOOK_PROJECT)
    with extension_kernel(project, emulator.client_env) as kernel:
        kernel.ok(f"%flyte_config flyte_config={emulator.config_path} executor=flyte")
        kernel.ok("import hashlib, os\nblob = os.urandom(24 << 20)\n")
        kernel.ok("sent = hashlib.sha256(blob).hexdigest()")
        assert kernel.ok("%%flyte_run\nlen(sent)").result == "64"  # small: inline both ways
        small_run = emulator.run_names[-1]
        small_out = _outputs(emulator, small_run, common_pb2)
        assert small_out["o1"].scalar.union.value.scalar.HasField("none_type")
        assert [u for u in emulator.uploads if u["filename"] == "inputs.pkl"] == []
        pid = kernel.manager.provisioner.process.pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
        before = _hwm_mb(pid)
        cell = "%%flyte_run\nimport hashlib\nseen = hashlib.sha256(blob).hexdigest()\n"
        cell += "back = blob[::-1]"
        kernel.ok(cell, timeout=300)
        growth = _hwm_mb(pid) - before
        check = "hashlib.sha256(back[::-1]).hexdigest() == sent == seen"
        assert kernel.ok(check).result == "True"
        name = emulator.run_names[-1]
        inline = emulator.inline_input_sizes[-1]
        (upload,) = [u for u in emulator.uploads if u["filename"] == "inputs.pkl"]
        uploaded = len(emulator.read_object(upload["native_url"]))
        outputs_pb = emulator.read_object(f"{emulator._runs[name].output_prefix}/outputs.pb")
        out = _outputs(emulator, name, common_pb2)
        blob_uri = out["o1"].scalar.union.value.scalar.blob.uri
        returned = len(emulator.read_object(blob_uri))
        print(f"inline inputs {inline} B, inputs file {uploaded} B; outputs.pb {len(outputs_pb)} B,"
              f" outputs file {returned} B at {blob_uri}; kernel peak growth {growth:.0f} MB "
              f"for a 24 MB value in and a 24 MB value back")  # fmt: skip
        assert inline < 64 << 10 and len(outputs_pb) < 64 << 10
        assert uploaded > 24 << 20 and returned > 24 << 20
        assert blob_uri.startswith(f"s3://{emulator.bucket}/raw/{name}/")
        assert emulator.run_phase(name) == "SUCCEEDED"
        assert growth < 3 * 24  # the value itself + unpickling; inline it was ~5 copies
        uploads = len(emulator.uploads)
        kernel.ok(cell, timeout=300)  # the same value again: the data plane has it
        print(f"uploads for the re-run on the same value: {len(emulator.uploads) - uploads}")
        assert len(emulator.uploads) == uploads
        assert kernel.ok(check).result == "True"
        bucket, key = upload["native_url"].removeprefix("s3://").split("/", 1)
        emulator._s3.delete_object(Bucket=bucket, Key=key)  # the cluster's storage was cleaned
        missing = kernel.execute(cell, timeout=300)
        text = re.sub(r"\x1b\[[0-9;]*m", "", missing.error_text if missing.error else "")
        print("inputs gone from the data plane:", text.strip().splitlines()[-1:])
        assert "is not in Flyte's storage" in text and "delete flyte-uploads.json" in text
        (Path(os.environ["FLYTE_JUPYTER_CACHE_DIR"]) / "flyte-uploads.json").unlink()
        kernel.ok(cell, timeout=300)  # uploaded again
        assert kernel.ok(check).result == "True"


def _outputs(emulator: FlyteEmulator, run_name: str, common_pb2) -> dict:
    raw = emulator.read_object(f"{emulator._runs[run_name].output_prefix}/outputs.pb")
    return {lit.name: lit.value for lit in common_pb2.Outputs.FromString(raw).literals}


def test_big_outputs_changed_or_missing_in_storage_are_not_loaded(tree, emulator, tmp_path):
    """A big output is checked (size, sha256) before anything could load it: changed or gone in
    storage, the run says so in one line and writes nothing; restored, the same run reads it."""
    big = "\n\ndef big():\n    return b'v' * (3 << 20)\n"
    root = tree({**PROJECT, "app.py": PROJECT["app.py"] + big})
    env = cli_env(emulator)
    detached = cli(env, tmp_path, "run", f"{root}/app.py:big", "--executor=flyte", "--detach")
    assert detached.returncode == 0, detached.stderr
    run_id = detached.stdout.strip()
    name = detached.stderr.split("Flyte run ", 1)[1].split(":", 1)[0]
    assert emulator.wait_terminal(name, 120) == "SUCCEEDED"
    from flyteidl2.task import common_pb2

    uri = _outputs(emulator, name, common_pb2)["o1"].scalar.union.value.scalar.blob.uri
    original = emulator.read_object(uri)
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    from flyte_jupyter.core import history
    from flyte_jupyter.core.storage import Store

    store = Store(history.get(run_id).spec_json()["store"])
    outputs_pkl = store.run_url(run_id, "outputs.pkl")
    emulator.write_object(uri, original[:-1] + b"X")  # same size, one byte changed
    changed = cli(env, tmp_path, "runs", "show", run_id)
    emulator._s3.delete_object(Bucket=bucket, Key=key)
    gone = cli(env, tmp_path, "runs", "show", run_id)
    written = int(store.exists(outputs_pkl))
    print(f"changed: exit {changed.returncode}: {changed.stderr.strip()}")
    print(f"gone: exit {gone.returncode}: {gone.stderr.strip()}")
    print(f"outputs files written from changed or missing objects: {written}")
    assert changed.returncode != 0 and "changed in storage, not loaded" in changed.stderr
    assert gone.returncode != 0 and "cannot be read from here (FileNotFoundError" in gone.stderr
    assert f"%flyte_result {run_id} or flyte-jupyter runs show {run_id}" in gone.stderr
    assert changed.stderr.strip().count("\n") == gone.stderr.strip().count("\n") == 0
    assert written == 0
    emulator.write_object(uri, original)
    restored = cli(env, tmp_path, "runs", "show", run_id)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["status"] == "succeeded"
    assert store.get_bytes(outputs_pkl) == original


def test_a_long_log_travels_as_a_file(tree, emulator, tmp_path):
    """12 MB of output: over the inline cap, so the log comes back as a File (whole, in the
    run's logs.txt); a failing run's error carries only the log's end."""
    noisy = (
        "\n\ndef noisy(fail: str = ''):\n"
        "    for i in range(120_000):\n"
        "        print(f'line {i:06d} ' + 'x' * 88)\n"
        "    if fail:\n"
        "        raise ValueError('after the noise')\n"
        "    return 'quiet now'\n"
    )
    root = tree({**PROJECT, "app.py": PROJECT["app.py"] + noisy})
    env = cli_env(emulator)
    from flyteidl2.task import common_pb2

    from flyte_jupyter.core import history
    from flyte_jupyter.core.storage import Store

    ok = cli(env, tmp_path, "run", f"{root}/app.py:noisy", "--executor=flyte")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.splitlines()[-1] == '"quiet now"'
    run_id = history.recent()[0].id
    name = emulator.run_names[-1]
    out = _outputs(emulator, name, common_pb2)
    store = Store(history.get(run_id).spec_json()["store"])
    log = store.get_bytes(store.run_url(run_id, "logs.txt")).decode()
    lines = [line for line in log.splitlines() if line.startswith("line ")]
    outputs_pb = emulator.read_object(f"{emulator._runs[name].output_prefix}/outputs.pb")
    print(f"log {len(log)} B, {len(lines)} lines; outputs.pb {len(outputs_pb)} B")
    assert out["o2"].scalar.union.value.scalar.HasField("blob")
    assert len(outputs_pb) < 64 << 10
    assert lines[0] == "line 000000 " + "x" * 88 and len(lines) == 120_000
    bad = cli(env, tmp_path, "run", f"{root}/app.py:noisy", "--executor=flyte", "--arg", "fail=1")
    assert bad.returncode == 1 and "ValueError: after the noise" in bad.stderr
    failed = emulator._runs[emulator.run_names[-1]].error.message
    run_id = history.recent()[0].id
    log = store.get_bytes(store.run_url(run_id, "logs.txt")).decode()
    print(f"failed run: error message {len(failed)} B, log kept {len(log)} B")
    assert len(failed) < 1 << 20 and log.startswith("[the first ")
    print("log ends:", log.rstrip().splitlines()[-3:])
    assert "line 119999 " in log and log.rstrip().endswith("ValueError: after the noise")
