"""The generated methods table: up to date, and what the parameter counts must show."""

from __future__ import annotations

from pathlib import Path

import pytest

from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table():
    return load_script("training/methods_table.py")


@pytest.fixture(scope="module")
def counts(table):
    return {name: table.counts(name) for name in ("joint", "ummkd", "csa", "x_shaped", "y_shaped", "individual", "lssc")}


def test_committed_readme_is_what_the_script_generates(table):
    assert table.README.read_text(encoding="utf-8") == table.render(), "stale: run python training/methods_table.py"


def test_every_method_of_the_papers_is_in_the_table(table):
    text = table.README.read_text(encoding="utf-8")
    for name in ("individual", "joint", "joint_kd", "y_shaped", "x_shaped", "ummkd", "csa", "lssc", "mulmodseg", "cmc"):
        assert f"| `{name}` |" in text


def test_joint_kd_is_joint_with_a_loss_term(counts, table):
    assert table.counts("joint_kd") == counts["joint"]


def test_ummkd_and_csa_add_only_normalisation_parameters_over_joint(counts):
    for name in ("ummkd", "csa"):
        assert counts[name]["exported_outside_norms"] == counts["joint"]["exported_outside_norms"]
        assert counts[name]["exported"] > counts["joint"]["exported"]


def test_individual_doubles_and_x_shaped_about_doubles_joint(counts):
    joint = counts["joint"]["exported"]
    assert counts["individual"]["exported"] == 2 * joint
    assert 1.5 < counts["x_shaped"]["exported"] / joint < 2.0
    assert joint < counts["y_shaped"]["exported"] < counts["x_shaped"]["exported"]


def test_lssc_exports_less_than_it_trains(counts):
    """The EAMs and class embeddings train but are not exported."""
    assert counts["lssc"]["exported"] < counts["lssc"]["training"]
