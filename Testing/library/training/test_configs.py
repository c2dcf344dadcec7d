"""Every shipped training config parses, names a registered method and existing data."""

from pathlib import Path

import pytest
from conftest import REPO

from MultiModalSegLib.methods import get_method
from MultiModalSegLib.training import load_config

CONFIGS = sorted((REPO / "training" / "configs").glob("*.json"))


def test_there_are_configs():
    assert any(p.name == "abdomen_ummkd_default.json" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid(path):
    cfg = load_config(path)
    get_method(cfg.method)
    for entry in cfg.datasets:
        assert Path(entry["path"] if isinstance(entry, dict) else entry).is_file()
