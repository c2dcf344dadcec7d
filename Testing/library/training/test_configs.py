"""Every shipped training config parses, names a registered method and existing data."""

from pathlib import Path

import pytest
from conftest import REPO

from MultiModalSegLib.methods import get_method
from MultiModalSegLib.training import load_config

CONFIGS = sorted((REPO / "training" / "configs").glob("*.json"))
README_DATA = REPO / "data"  # written by the README's `mmseg phantom --out data/phantoms` (Testing/test_readme.py), git-ignored


def test_there_are_configs():
    assert any(p.name == "abdomen_ummkd_default.json" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid(path):
    cfg = load_config(path)
    get_method(cfg.method)
    for entry in cfg.datasets:
        path = Path(entry["path"] if isinstance(entry, dict) else entry)
        assert path.is_file() or path.is_relative_to(README_DATA), path
