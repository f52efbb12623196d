"""The documentation matches the code it describes."""

from __future__ import annotations

from pathlib import Path

from txm import config

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_settings_reference_is_generated_from_the_table():
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    block = text.split("<!-- settings-table:start -->\n", 1)[1].split("<!-- settings-table:end -->", 1)[0]
    assert block.strip() == config.settings_markdown().strip(), (
        "docs/settings.md is out of date: regenerate the block between the settings-table markers "
        "with `python -m txm.config`")


def test_every_setting_is_documented_once():
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    for setting in config.SETTINGS:
        assert text.count(f"| `{setting.key}` |") == 1, setting.key


def test_every_table_and_column_is_in_the_schema_doc():
    import re

    from txm.db import schema

    text = (DOCS / "schema.md").read_text(encoding="utf-8")
    for model in schema.MODELS:
        table = model._meta.table_name
        assert f"`{table}`" in text, f"docs/schema.md does not describe the table {table}"
        for field in model._meta.sorted_fields:
            column = field.column_name
            if re.fullmatch(r"ch\d+", column):
                continue  # documented as ch1 ... ch32
            assert f"`{column}`" in text, f"docs/schema.md does not mention {table}.{column}"
