"""Runs end to end: bundle -> real store -> local executor (a clean interpreter) -> result,
logs, errors, cancel and history."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
from conftest import process_alive

from flyte_jupyter.core import history
from flyte_jupyter.core.bundle import build_bundle
from flyte_jupyter.core.errors import RemoteError, RunError, UsageError
from flyte_jupyter.core.selection import select_files
from flyte_jupyter.core.storage import Store
from flyte_jupyter.core.submit import Run, get_executor, submit

PROJECT = {
    "pyproject.toml": "[project]\nname='shop'\n",
    "app.py": """
        import json
        import sys
        import time
        from pathlib import Path

        from shop.pricing import basket_total


        def main(region="eu"):
            prices = json.loads(Path("data/prices.json").read_text())
            print("pricing", len(prices), "items")
            print("to stderr", file=sys.stderr)
            return basket_total(prices, region)


        def fail():
            from shop.pricing import explode
            explode()


        def leave():
            sys.exit(3)


        def receipt():
            from shop.models import Receipt
            return Receipt(total=main())


        def slow(pid_file):
            import subprocess
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            Path(pid_file).write_text(f"{child.pid}")
            time.sleep(60)
        """,
    "shop/__init__.py": "",
    "shop/pricing.py": """
        from shop.rates import RATES


        def basket_total(prices, region):
            from shop.discounts import discount  # lazy import: shipped anyway
            return round(sum(prices) * (1 + RATES[region]) * (1 - discount(prices)), 2)


        def explode():
            raise ValueError("price list is empty")
        """,
    "shop/rates.py": "RATES = {'eu': 0.2, 'us': 0.1}\n",
    "shop/models.py": """
        from dataclasses import dataclass


        @dataclass
        class Receipt:
            total: float
        """,
    "shop/discounts.py": "def discount(prices):\n    return 0.1 if len(prices) > 2 else 0.0\n",
    "data/prices.json": "[10, 20, 30]\n",
}


def bundle_of(root: Path, entry: str = "app.py", **kwargs):
    return build_bundle(select_files(root, entries=[root / entry], include=["data/*"], **kwargs))


def test_round_trip_through_each_store(tree, store: Store):
    root = tree(PROJECT)
    run = submit(bundle_of(root), "app:main", kwargs={"region": "us"}, store=store)
    lines = list(run.logs())
    assert run.result(timeout=60) == round(60 * 1.1 * 0.9, 2)
    assert run.status() == "succeeded"
    assert ("stdout", "pricing 3 items\n") in [(x.stream, x.text) for x in lines]
    assert ("stderr", "to stderr\n") in [(x.stream, x.text) for x in lines]
    stored = store.get_bytes(store.run_url(run.id, "logs.txt")).decode()
    assert "pricing 3 items" in stored
    record = history.get(run.id)
    assert record.status == "succeeded" and record.digest == run.spec.digest
    assert record.started and record.finished and record.exit_code == 0


def test_changed_module_changes_digest_and_remote_sees_new_code(tree, store: Store):
    root = tree(PROJECT)
    first = submit(bundle_of(root), "app:main", store=store)
    assert first.result(timeout=60) == 64.8
    assert first.upload and first.upload.uploaded_bytes > 0
    again = submit(bundle_of(root), "app:main", store=store)
    assert again.result(timeout=60) == 64.8
    assert again.upload and again.upload.uploaded_bytes == 0 and again.upload.skipped == "exists"
    (root / "shop/rates.py").write_text("RATES = {'eu': 0.5, 'us': 0.1}\n")
    changed = submit(bundle_of(root), "app:main", store=store)
    assert changed.spec.digest != first.spec.digest
    assert changed.result(timeout=60) == round(60 * 1.5 * 0.9, 2)


def test_remote_exception_comes_back_with_bundle_relative_traceback(tree):
    root = tree(PROJECT)
    run = submit(bundle_of(root), "app:fail")
    with pytest.raises(RemoteError) as err:
        run.result(timeout=60)
    exc = err.value
    assert exc.remote_type == "ValueError" and exc.remote_message == "price list is empty"
    assert 'File "shop/pricing.py", line 10, in explode' in exc.remote_traceback
    assert 'File "app.py"' in exc.remote_traceback
    assert str(Path.home()) not in exc.remote_traceback and "/tmp/" not in exc.remote_traceback
    assert "flyte_jupyter" not in exc.remote_traceback
    assert history.get(run.id).error == "ValueError: price list is empty"


def test_sys_exit_comes_back_as_an_error_with_its_code(tree):
    root = tree(PROJECT)
    run = submit(bundle_of(root), "app:leave")
    with pytest.raises(RemoteError) as err:
        run.result(timeout=60)
    assert err.value.remote_type == "SystemExit"
    assert err.value.remote_message == "exit code 3"
    assert 'File "app.py", line 22, in leave' in err.value.remote_traceback
    assert history.get(run.id).exit_code == 3


def test_module_only_beside_the_caller_fails_remotely_with_advice(tree, tmp_path, monkeypatch):
    root = tree(
        {"app.py": "def main():\n    import helper_here\n    return helper_here.X\n"},
        name="workspace/project",
    )
    (tmp_path / "workspace" / "helper_here.py").write_text("X = 1\n")
    monkeypatch.chdir(tmp_path / "workspace")  # importable locally from the cwd...
    monkeypatch.syspath_prepend(str(tmp_path / "workspace"))
    bundle = bundle_of(root)
    assert any("cannot resolve import 'helper_here'" in w for w in bundle.selection.warnings)
    with pytest.raises(RemoteError) as err:  # ...but not in a clean interpreter
        submit(bundle, "app:main").result(timeout=60)
    assert err.value.remote_type == "ModuleNotFoundError"
    assert "outside root_dir" in err.value.hint
    assert f"set root_dir to {(tmp_path / 'workspace').resolve()}" in err.value.hint


def test_cancel_kills_the_whole_process_tree(tree, tmp_path):
    root = tree(PROJECT)
    pid_file = tmp_path / "child.pid"
    run = submit(bundle_of(root), "app:slow", args=[str(pid_file)])
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    leader = history.get(run.id).pid
    run.cancel()
    assert run.status() == "cancelled"
    assert history.get(run.id).status == "cancelled"
    for pid in (leader, child):
        assert not process_alive(pid), f"process {pid} survived cancel"
    with pytest.raises(RunError, match="was cancelled"):
        run.result()


def test_wait_timeout_is_a_clear_error(tree, tmp_path):
    root = tree(PROJECT)
    run = submit(bundle_of(root), "app:slow", args=[str(tmp_path / "pid")])
    try:
        with pytest.raises(RunError, match=r"is still (submitted|downloading|running) after 0.5s"):
            run.wait(timeout=0.5)
    finally:
        run.cancel()


def test_unpicklable_argument_is_named(tree, tmp_path):
    root = tree(PROJECT)
    with open(tmp_path / "f.txt", "w") as handle, pytest.raises(RunError) as err:
        submit(bundle_of(root), "app:main", kwargs={"region": handle})
    assert "argument 'region' (TextIOWrapper) cannot be sent" in str(err.value)
    assert history.recent() == []


def test_other_interpreter_as_image_reports_missing_packages(tree, tmp_path):
    venv.EnvBuilder(with_pip=False).create(tmp_path / "bare-venv")
    root = tree({"app.py": "import pathspec\n\ndef main():\n    return pathspec.__name__\n"})
    bundle = bundle_of(root)
    assert bundle.selection.third_party == ["pathspec"]
    run = submit(bundle, "app:main", image=f"python={tmp_path / 'bare-venv'}")
    with pytest.raises(RemoteError) as err:
        run.result(timeout=60)
    assert err.value.remote_type == "EnvironmentMismatch"
    assert "not installed here: pathspec==" in err.value.remote_message
    ok = tree({"app.py": "def main():\n    return 'stdlib only'\n"}, name="plain")
    run = submit(bundle_of(ok), "app:main", image=f"python={tmp_path / 'bare-venv'}")
    assert run.result(timeout=60) == "stdlib only"


def test_copy_style_none_runs_code_already_in_the_image():
    run = submit(None, "platform:python_version", version="v1.0.0")
    assert run.result(timeout=60) == ".".join(map(str, sys.version_info[:3]))
    assert run.spec.version == "v1.0.0" and run.spec.digest is None
    with pytest.raises(UsageError, match="explicit version"):
        submit(None, "platform:python_version")


def test_detached_run_is_followed_from_the_history(tree):
    root = tree(PROJECT)
    run_id = submit(bundle_of(root), "app:main").id
    again = Run.from_history(run_id[:18])  # a unique prefix is enough
    assert again.result(timeout=60) == 64.8
    assert history.get(run_id).status == "succeeded"


def test_unknown_executor_and_bad_image_are_clear():
    with pytest.raises(UsageError, match="unknown executor 'kubernetes': available executors"):
        get_executor("kubernetes")
    with pytest.raises(UsageError, match=r"not image 'python:3\.11'"):
        submit(None, "m:f", version="v1", image="python:3.11")


def test_cli_run_and_runs(tree, tmp_path):
    root = tree(PROJECT)
    env = os.environ.copy()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flyte_jupyter", *args],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip

    ok = cli("run", f"{root}/app.py:main", "--include", "data/*", "--arg", "region=us")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["pricing 3 items", "59.4"]
    assert "to stderr" in ok.stderr and "uploaded" in ok.stderr
    bad = cli("run", f"{root}/app.py:fail", "--include", "data/*")
    assert bad.returncode == 1
    assert "ValueError: price list is empty" in bad.stderr
    assert 'File "shop/pricing.py", line 10, in explode' in bad.stderr
    assert "bundle already in the store" in bad.stderr
    detached = cli("run", f"{root}/app.py:main", "--include", "data/*", "--detach")
    run_id = detached.stdout.strip()
    Run.from_history(run_id).wait(60)
    listing = cli("runs").stdout
    assert run_id in listing and "failed" in listing and "succeeded" in listing
    show = cli("runs", "show", run_id)
    assert '"status": "succeeded"' in show.stdout and '"repr": "64.8"' in show.stdout
    code_dir = tmp_path / "code"
    extracted = cli("runs", "code", run_id, str(code_dir))
    assert extracted.returncode == 0, extracted.stderr
    shipped = sorted(p.relative_to(code_dir).as_posix() for p in code_dir.rglob("*") if p.is_file())
    assert shipped == [
        "app.py",
        "data/prices.json",
        "shop/__init__.py",
        "shop/discounts.py",
        "shop/models.py",
        "shop/pricing.py",
        "shop/rates.py",
    ]
    assert (code_dir / "shop/rates.py").read_bytes() == (root / "shop/rates.py").read_bytes()
    usage = cli("run", "app.py", "--arg", "x=1")
    assert usage.returncode == 2 and "must look like FILE.py:FUNCTION" in usage.stderr


def test_instances_of_project_classes_come_back_as_those_classes(tree):
    root = tree(PROJECT)
    try:
        result = submit(bundle_of(root), "app:receipt").result(timeout=60)
        assert type(result).__name__ == "Receipt" and type(result).__module__ == "shop.models"
        assert result.total == 64.8
        assert sys.modules["shop.models"].__file__ == str((root / "shop/models.py").resolve())
    finally:
        for name in [m for m in sys.modules if m == "shop" or m.startswith("shop.")]:
            del sys.modules[name]
        sys.path[:] = [p for p in sys.path if not p.startswith(str(root.resolve()))]
