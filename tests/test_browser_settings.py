"""The sidebar's settings form in a real JupyterLab (Debian's chromium, Playwright) is built
from the `fields` the server sends: one input per declared field with its widget, allowed
values, minimum and help as tooltip; the executor's own fields show only for that executor.
The lab, browser and helpers are test_browser's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import test_browser as browser
from test_browser import SIDEBAR, open_notebook, open_sidebar

from flyte_jupyter.core import config

pytestmark = pytest.mark.slow
lab, page, failure_screenshot = browser.lab, browser.page, browser.failure_screenshot


def test_the_form_has_one_input_per_declared_field(page: Any, lab: tuple[str, Path]):
    open_notebook(page, lab, "quickstart/quickstart.ipynb")
    open_sidebar(page)
    page.wait_for_selector("#fj-setting-copy_style", timeout=30_000)
    shown = page.eval_on_selector_all(
        f"{SIDEBAR} .fj-form [id^=fj-setting-]:is(input, select, textarea)",
        """els => els.map(e => ({key: e.name, tag: e.tagName.toLowerCase(), type: e.type,
            title: e.title, min: e.getAttribute('min'), checked: e.checked,
            options: e.tagName === 'SELECT' ? [...e.options].map(o => o.value) : null,
            visible: e.offsetParent !== null}))""",
    )
    by_key = {s["key"]: s for s in shown}
    print("inputs:", len(shown), "declared fields:", len(config.FIELDS))
    assert list(by_key) == list(config.FIELDS)
    for key, field in config.FIELDS.items():
        got = by_key[key]
        assert got["title"] == field.help, key
        if field.widget_kind == "select":
            assert got["options"] == list(field.allowed()), key
        elif field.widget_kind == "checkbox":
            assert got["type"] == "checkbox" and got["checked"] is field.default, key
        elif field.widget_kind == "number":
            assert got["type"] == "number", key
            expected = None if field.minimum is None else f"{field.minimum:g}"
            assert got["min"] == expected, key
        elif field.widget_kind == "json":
            assert got["tag"] == "textarea", key
    hidden = sorted(k for k, s in by_key.items() if not s["visible"])
    flyte = sorted(k for k, f in config.FIELDS.items() if f.group == "flyte")
    print("hidden with the local executor:", hidden)
    assert hidden == flyte
    # the flyte executor's own settings show once it is chosen; nothing is saved yet
    page.select_option("#fj-setting-executor", "flyte")
    assert page.is_visible("#fj-setting-endpoint")
    assert page.text_content("#fj-setting-executor-help") == config.FIELDS["executor"].help
    apply = page.locator(f"{SIDEBAR} .fj-form button[type=submit]")
    assert apply.get_attribute("title") == "Save executor to .flyte-jupyter.toml"
    page.select_option("#fj-setting-executor", "local")
    assert not page.is_visible("#fj-setting-endpoint") and apply.is_disabled()
