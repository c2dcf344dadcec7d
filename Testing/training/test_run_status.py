"""``training/run_status.py``: the status of a run from its ``progress.jsonl``, and other runs' validation
Dice beside it at the same steps."""

from __future__ import annotations

import json

import pytest

from Testing.conftest import load_script


@pytest.fixture(scope="module")
def status_script():
    return load_script("training/run_status.py")


def dice(liver: float, spleen: float) -> dict:
    return {"liver": liver, "spleen": spleen, "mean": (liver + spleen) / 2}


def write_run(folder, validations: dict[int, tuple[float, float]], steps: int = 1000) -> None:
    folder.mkdir(parents=True)
    records = [{"event": "start", "time": 0.0, "step": 0, "steps": steps}]
    for step, (ct, mr) in validations.items():
        records.append({"event": "step", "time": float(step), "step": step, "steps": steps,
                        "losses": {"loss": 1.0}, "lr": 1e-3, "elapsed_s": float(step), "eta_s": 0.0})
        records.append({"event": "validation", "time": float(step), "step": step,
                        "dice": {"CT": dice(ct, ct / 2), "MR": dice(mr, mr / 2)}, "cases": ["ct", "mr"]})
    (folder / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_other_runs_are_shown_at_the_steps_of_the_run(status_script, tmp_path):
    write_run(tmp_path / "new", {250: (0.2, 0.0), 500: (0.6, 0.1)})
    write_run(tmp_path / "old", {250: (0.4, 0.3), 500: (0.8, 0.5), 750: (0.9, 0.6)})
    write_run(tmp_path / "short", {250: (0.1, 0.1)})
    status_script.main(["--run", str(tmp_path / "new"), "--out", str(tmp_path / "report"),
                        "--beside", str(tmp_path / "old"), "--beside", str(tmp_path / "short")])
    text = (tmp_path / "report" / "status.md").read_text()
    assert "Step 500 of 1000" in text
    mr = text[text.index("MR validation Dice (liver / spleen (mean))"):]
    assert "| step | new | old | short |" in mr
    assert "| 500 | 0.10 / 0.05 (0.08) | 0.50 / 0.25 (0.38) | - |" in mr
    assert "| 750 |" not in mr  # only the steps the run itself has reached
    ct = text[text.index("CT validation Dice"):text.index("MR validation Dice")]
    assert "| 250 | 0.20 / 0.10 (0.15) | 0.40 / 0.20 (0.30) | 0.10 / 0.05 (0.08) |" in ct
    assert (tmp_path / "report" / "status.png").stat().st_size > 0


def test_without_other_runs_no_side_by_side_section(status_script, tmp_path):
    write_run(tmp_path / "run", {250: (0.2, 0.0)})
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "status.md").read_text()
    assert "Beside other runs" not in text
    assert "| 250 | 0.200 | 0.100 | 0.000 | 0.000 |" in text
    assert "Mean Dice over the last 1 checks (steps 250): CT 0.150, MR 0.000." in text


def test_the_last_checks_averaged(status_script, tmp_path):
    write_run(tmp_path / "run", {250: (0.2, 0.0), 500: (0.4, 0.2), 750: (0.6, 0.4), 1000: (0.8, 0.0)})
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "status.md").read_text()
    # means per check: CT 0.30, 0.45, 0.60 and MR 0.15, 0.30, 0.00 at steps 500, 750, 1000
    assert "Mean Dice over the last 3 checks (steps 500, 750, 1000): CT 0.450, MR 0.150." in text


def test_runs_of_the_same_name_and_other_organs_keep_their_own_columns(status_script, tmp_path):
    """Two runs whose folders share a name get a column each (their paths); an organ another run does
    not validate reads "-" rather than failing."""
    write_run(tmp_path / "a" / "run", {250: (0.2, 0.0)})
    write_run(tmp_path / "b" / "run", {250: (0.4, 0.2)})
    other = tmp_path / "c" / "liver-only"
    other.mkdir(parents=True)
    (other / "progress.jsonl").write_text(json.dumps(
        {"event": "validation", "time": 1.0, "step": 250, "dice": {"CT": {"liver": 0.7, "mean": 0.7}}}) + "\n")
    status_script.main(["--run", str(tmp_path / "a" / "run"), "--out", str(tmp_path / "report"),
                        "--beside", str(tmp_path / "b" / "run"), "--beside", str(other)])
    text = (tmp_path / "report" / "status.md").read_text()
    ct = text[text.index("CT validation Dice"):text.index("MR validation Dice")]
    assert f"| step | {tmp_path / 'a' / 'run'} | {tmp_path / 'b' / 'run'} | liver-only |" in ct
    assert "| 250 | 0.20 / 0.10 (0.15) | 0.40 / 0.20 (0.30) | 0.70 / - (0.70) |" in ct


def test_a_check_repeated_after_a_resume_is_one_row(status_script, tmp_path):
    """A run stopped after a check and before its next checkpoint repeats that check when it resumes."""
    write_run(tmp_path / "run", {250: (0.2, 0.0), 500: (0.4, 0.2)})
    progress = tmp_path / "run" / "progress.jsonl"
    repeat = {"event": "validation", "time": 600.0, "step": 500, "dice": {"CT": dice(0.5, 0.25), "MR": dice(0.3, 0.15)},
              "cases": ["ct", "mr"]}
    progress.write_text(progress.read_text() + json.dumps(repeat) + "\n")
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "status.md").read_text()
    assert text.count("| 500 |") == 1 and "| 500 | 0.500 | 0.250 | 0.300 | 0.150 |" in text  # the last record counts


def test_each_session_names_its_device_and_a_precision_other_than_float32(status_script, tmp_path):
    write_run(tmp_path / "run", {250: (0.2, 0.0), 500: (0.4, 0.2)})
    progress = tmp_path / "run" / "progress.jsonl"
    records = [json.loads(line) for line in progress.read_text().splitlines()]
    records[0]["device"] = "cuda"
    records.insert(3, {"event": "start", "time": 300.0, "step": 250, "steps": 1000, "device": "cpu"})
    records.insert(4, {"event": "start", "time": 400.0, "step": 300, "steps": 1000, "device": "cpu",
                       "precision": "bfloat16 (CPU autocast)"})
    progress.write_text("".join(json.dumps(r) + "\n" for r in records))
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "status.md").read_text()
    assert "over 3 session(s) (start steps: 0 on cuda, 250 on cpu, 300 on cpu in bfloat16 (CPU autocast))." in text


def test_the_largest_piece_figures_get_their_own_table_where_logged(status_script, tmp_path):
    write_run(tmp_path / "run", {250: (0.2, 0.0), 500: (0.4, 0.2)})
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "plain")])
    assert "largest piece" not in (tmp_path / "plain" / "status.md").read_text()
    progress = tmp_path / "run" / "progress.jsonl"
    records = [json.loads(line) for line in progress.read_text().splitlines()]
    for r in records:
        if r["event"] == "validation" and r["step"] == 500:  # a run resumed after step 250 logs both from then on
            r["dice_largest_piece"] = {"CT": dice(0.6, 0.5), "MR": dice(0.3, 0.2)}
    progress.write_text("".join(json.dumps(r) + "\n" for r in records))
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "status.md").read_text()
    plain, kept = text.split("each organ's largest piece alone")
    assert "| 500 | 0.400 | 0.200 | 0.200 | 0.100 |" in plain and "| 250 |" in plain
    assert "| 500 | 0.600 | 0.500 | 0.300 | 0.200 |" in kept and "| 250 |" not in kept
    assert "Mean Dice over the last 1 checks (steps 500): CT 0.550, MR 0.250." in kept


def test_the_averaged_weights_have_their_own_table(status_script, tmp_path):
    write_run(tmp_path / "run", {250: (0.2, 0.0), 500: (0.4, 0.2)})
    lines = (tmp_path / "run" / "progress.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["weight_average"] = {"count": 2, "dice": last["dice"], "dice_largest_piece": {"CT": dice(0.7, 0.5), "MR": dice(0.3, 0.1)}}
    (tmp_path / "run" / "progress.jsonl").write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "status.md").read_text()
    averaged = text[text.index("The mean of the weights so far"):]
    assert "| 500 | 0.700 | 0.500 | 0.300 | 0.100 |" in averaged and "| 250 |" not in averaged
    assert "Mean Dice over the last 1 checks (steps 500): CT 0.600, MR 0.200." in averaged



def test_runs_checked_at_different_overlaps_are_said_not_like_for_like(status_script):
    """A run whose checks slide the bundle's windows (overlap 0.5, recorded) beside one that checked at 0.25."""
    check = {"event": "validation", "step": 250, "dice": {"CT": {"spleen": 0.5, "mean": 0.5}}}
    new, old = [{**check, "overlap": 0.5}], [check]
    assert "not like for like: new 0.5, old 0.25." in status_script.beside_markdown({"new": new, "old": old})
    assert "like for like" not in status_script.beside_markdown({"new": new, "newer": new})


def test_the_status_names_the_overlap_its_checks_ran_at(status_script, tmp_path):
    """A run's own table says at which overlap its checks slid their windows (0.25 where none is recorded)."""
    write_run(tmp_path / "old", {250: (0.2, 0.0)})
    status_script.main(["--run", str(tmp_path / "old"), "--out", str(tmp_path / "report")])
    assert "model space; sliding windows at overlap 0.25):" in (tmp_path / "report" / "status.md").read_text()
    records = [json.loads(line) for line in (tmp_path / "old" / "progress.jsonl").read_text().splitlines()]
    (tmp_path / "old" / "progress.jsonl").write_text("".join(json.dumps({**r, "overlap": 0.5} if r["event"] == "validation" else r) + "\n"
                                                             for r in records))
    status_script.main(["--run", str(tmp_path / "old"), "--out", str(tmp_path / "report")])
    assert "model space; sliding windows at overlap 0.5):" in (tmp_path / "report" / "status.md").read_text()


def test_the_pieces_kept_as_delivered_get_their_own_table_where_logged(status_script, tmp_path):
    write_run(tmp_path / "run", {250: (0.2, 0.0), 500: (0.4, 0.2)})
    progress = tmp_path / "run" / "progress.jsonl"
    records = [json.loads(line) for line in progress.read_text().splitlines()]
    for r in records:
        if r["event"] == "validation" and r["step"] == 500:
            r["dice_largest_piece"] = {"CT": dice(0.6, 0.0), "MR": dice(0.3, 0.2)}
            r["dice_as_delivered"] = {"CT": dice(0.6, 0.7), "MR": dice(0.3, 0.2)}
    progress.write_text("".join(json.dumps(r) + "\n" for r in records))
    status_script.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    text = (tmp_path / "report" / "status.md").read_text()
    delivered = text[text.index("the piece the `Segmenter` now keeps"):]
    assert "| 500 | 0.600 | 0.700 | 0.300 | 0.200 |" in delivered and "| 250 |" not in delivered
