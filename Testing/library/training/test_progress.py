import io

from MultiModalSegLib.training.progress import ProgressBar, ProgressLog, format_seconds, read_progress


def test_log_is_readable_while_written(tmp_path):
    log = ProgressLog(tmp_path / "p.jsonl")
    log.write("step", step=1, losses={"loss": 1.5})
    assert read_progress(tmp_path / "p.jsonl")[0]["losses"]["loss"] == 1.5  # flushed at once
    with open(tmp_path / "p.jsonl", "a") as f:
        f.write('{"event": "step", "ste')  # a line being written by another process
    assert len(read_progress(tmp_path / "p.jsonl")) == 1
    log.close()


def test_bar_prints_plain_lines_off_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(20, stream=stream, every=10)
    for step in range(1, 21):
        bar.update(step, "loss 1")
    assert stream.getvalue().splitlines() == ["step 10/20 loss 1", "step 20/20 loss 1"]
    assert format_seconds(3725) == "1:02:05" and format_seconds(65) == "01:05"
