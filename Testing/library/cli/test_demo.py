from MultiModalSegLib.cli import main


def test_demo_writes_segmentations_overlays_and_a_dice_table(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_bundle), "--output", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for case in ("abdomen_ct_01", "abdomen_mr_01"):
        assert (out / f"{case}.seg.nrrd").stat().st_size > 0
        assert (out / f"{case}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"| {case} |" in printed
    assert "liver Dice" in (out / "dice.md").read_text()
