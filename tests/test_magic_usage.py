"""Bad magic options in a real ipykernel: one UsageError line that says what to do (close the
quote, see the magic's --help), never a Python traceback through IPython's internals."""

from __future__ import annotations

from pathlib import Path

from kernel import extension_kernel

BAD = {
    "%%flyte_run --include 'data\n1": "close the quote",
    "%flyte_run --include 'data 1": "close the quote",
    "%%flyte_bundle --exclude 'x\n1": "close the quote",
    "%flyte_runs 'x": "close the quote",
    "%%flyte_run --nosuch 3\n1": "unrecognized arguments: --nosuch 3 (see %%flyte_run --help)",
    "%flyte_run --nosuch 3 1": "(see %flyte_run --help)",
    "%%flyte_bundle --nosuch\n1": "unrecognized arguments: --nosuch (see %%flyte_bundle --help)",
    "%flyte_runs abc": "invalid int value: 'abc' (see %flyte_runs --help)",
    "%flyte_export --nosuch": "(see %flyte_export --help)",
}


def test_bad_magic_options_are_one_line_saying_what_to_do(tmp_path: Path):
    with extension_kernel(tmp_path) as kernel:
        replies = {code: kernel.execute(code) for code in BAD}
    tracebacks = [code for code, reply in replies.items() if reply.error]
    print("tracebacks:", len(tracebacks), tracebacks)
    assert tracebacks == []
    for code, wanted in BAD.items():
        stderr = replies[code].stderr
        print(repr(code), "->", stderr.strip())
        assert stderr.startswith("UsageError: ") and stderr.count("\n") == 1, stderr
        assert wanted in stderr, (code, stderr)
