"""Settings: validation, defaults, and the README table."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from rlm_graph.settings import Settings


def test_settings_validation_and_sub_model_defaults() -> None:
    assert Settings().effective_sub_model == "openai:gpt-5-mini"
    assert Settings(model="qwen", base_url="http://x/v1").effective_sub_model == "qwen"
    assert Settings(model="a", sub_model="b").effective_sub_model == "b"
    assert Settings(base_url="u").effective_sub_base_url == "u"
    with pytest.raises(ValueError, match="max_depth=0"):
        Settings(max_depth=0)
    with pytest.raises(ValueError, match="cell_timeout"):
        Settings(cell_timeout=-1)
    with pytest.raises(ValueError, match="4096"):
        Settings(sandbox_memory_mb=8000)
    with pytest.raises(
        ValueError, match="sub_rlm_executor='dask' is unknown: use 'local' or 'ray'"
    ):
        Settings(sub_rlm_executor="dask")


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [f.name for f in fields(Settings) if f"| `{f.name}` |" not in readme]
    assert missing == []
