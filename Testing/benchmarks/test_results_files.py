import json
from pathlib import Path

from conftest import load_script


def test_save_results_writes_the_record_and_its_table(tmp_path):
    files = load_script("benchmarks/results_files.py")
    json_path, md_path = files.save_results(tmp_path / "new", "x", {"a": 1}, "| a |\n")
    assert json.loads(json_path.read_text()) == {"a": 1} and md_path.read_text() == "| a |\n"


def test_out_option_names_a_folder_other_than_the_default(tmp_path):
    files = load_script("benchmarks/results_files.py")
    repo = tmp_path / "repo"
    default = repo / "training" / "reports" / "real-scans"
    assert files.out_option(default, default, repo) == ""
    assert files.out_option(repo / "training" / "reports" / "v23", default, repo) == f" --out {Path('training/reports/v23')}"
    assert files.out_option(tmp_path / "elsewhere", default, repo) == f" --out {tmp_path / 'elsewhere'}"
