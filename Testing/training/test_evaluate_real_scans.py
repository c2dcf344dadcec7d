"""``training/evaluate_real_scans.py``: roles read from provenance, the committed table and the
README block regenerated from the committed per-scan numbers."""

from __future__ import annotations

import json
from pathlib import Path

from Testing.conftest import load_script

REPO = Path(__file__).resolve().parents[2]


def _module():
    return load_script("training/evaluate_real_scans.py")


def test_roles_come_from_the_models_own_provenance():
    e = _module()
    samples = str(REPO / "Resources" / "SampleData" / "dataset.json")
    scans = {s["name"]: s for s in e.real_scans()}
    both = {"training": {"config": {"datasets": [{"path": samples, "weight": 8}]}}}
    left_out = {"training": {"config": {"datasets": [{"path": samples, "exclude": ["abdomen_mr_01"]}]}}}
    # a provenance path from another machine is found by its place in the repository
    elsewhere = {"training": {"config": {"datasets": ["/home/builder/MultiModalSeg/Resources/SampleData/dataset.json"]}}}
    assert e.role(scans["abdomen_mr_01"], e.trained_case_names(both)) == "train"
    assert e.role(scans["abdomen_mr_01"], e.trained_case_names(left_out)) == "left out"
    assert e.role(scans["abdomen_ct_01"], e.trained_case_names(left_out)) == "train"
    assert e.role(scans["abdomen_mr_01"], e.trained_case_names(elsewhere)) == "train"
    for metadata in (both, left_out, elsewhere):
        assert e.role(scans["chest_abdomen_ct_02"], e.trained_case_names(metadata)) == "validation"


def test_committed_table_and_readme_block_match_the_committed_numbers():
    e = _module()
    rows = json.loads((REPO / "training" / "reports" / "real-scans" / "real_scans.json").read_text())
    table = e.markdown(rows)
    assert table in (REPO / "training" / "reports" / "real-scans" / "real_scans.md").read_text()
    begin, end = e.README_MARKERS
    block = (REPO / "README.md").read_text().split(begin, 1)[1].split(end, 1)[0]
    assert table in block
    # unseen scans come first; the kidneys of the validation scan are not scored
    roles = [r["role"] for r in sorted(rows, key=lambda r: e.ROLE_ORDER[r["role"]])]
    assert table.index("| validation |") < table.index("| train |") and roles[0] == "validation"
    first = next(r for r in rows if r["scan"] == "chest_abdomen_ct_02")
    assert set(first["metrics"]) == {"liver", "spleen"}
    assert abs(e.mean_dice(first) - (first["metrics"]["liver"]["dice"] + first["metrics"]["spleen"]["dice"]) / 2) < 1e-9
