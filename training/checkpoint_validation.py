"""A run's last checkpoint scored on the run's validation cases two ways: every piece the network calls an
organ (what in-run checks logged as ``dice``, the only figure of runs stopped before they logged
``dice_largest_piece``), each organ's largest piece alone, and the piece the ``Segmenter`` keeps (the largest
unless the organ layout finds it out of place: what its bundle would deliver, ``dice_as_delivered``). Model
space, the same prediction for all, as an in-run check.

    python training/checkpoint_validation.py \
        --run training/runs-in-progress/abdomen-ummkd-synth-16=training/configs/abdomen_synth_v16.json \
        --out training/reports/stopped-runs

Each checkpoint is copied into a temporary folder and read there, so a run folder is left as it is (a
recipe's phantoms are drawn again there). Each case is predicted as the run's bundle would segment it (the
recipe's polarity and normalisation ensembles); ``--normalisation-ensemble MR=0,0.5,1`` predicts as a bundle
released with that ensemble would, for a recipe that does not name one (an inference setting: the
checkpoint still matches). Writes ``checkpoint_validation.md`` and ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import save_results  # noqa: E402
from training.package_model import normalisation_args, normalisation_option  # noqa: E402


def run_and_config(text: str) -> tuple[Path, Path]:
    """``RUN_FOLDER=CONFIG`` from the command line."""
    run, sep, config = text.partition("=")
    if not sep or not run or not config:
        raise argparse.ArgumentTypeError(f"{text!r}: give RUN_FOLDER=CONFIG, e.g. training/runs-in-progress/x=training/configs/x.json")
    return Path(run), Path(config)


def score_checkpoint(run: Path, config: Path, normalisation_ensemble: dict[str, list[float]] | None = None) -> dict:
    """The step of ``run``'s last checkpoint, its validation cases and the Dice per modality and organ both ways;
    ``normalisation_ensemble`` in place of the recipe's."""
    from MultiModalSegLib.errors import ConfigError
    from MultiModalSegLib.training import Trainer, load_config
    from MultiModalSegLib.training.config import config_from_dict
    from MultiModalSegLib.training.validation import dice_both_ways, predict_cases

    checkpoint = run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: no checkpoint; give the folder of a run that has trained")
    cfg = load_config(config)
    if normalisation_ensemble:
        cfg = config_from_dict({**cfg.to_dict(), "normalisation_ensemble": normalisation_ensemble})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        shutil.copy2(checkpoint, Path(tmp) / "checkpoints" / "last.pt")
        trainer = Trainer(cfg, tmp, quiet=True)
        try:
            trainer.build()
        except ConfigError as exc:
            raise SystemExit(f"{run}: its checkpoint does not match {config} ({exc}); give the config the run was "
                             "trained with (the one in its folder's history)") from exc
        preds = predict_cases(trainer.method.inference_network(), trainer.val_cases, cfg.patch_size, trainer.device,
                              cfg.amp, polarity_ensemble=trainer.polarity_ensemble)
        scores = dice_both_ways(preds, trainer.val_cases, trainer.labels, cfg.spacing)
        return {"run": run.name, "step": trainer.step, "cases": [c.name for c in trainer.val_cases],
                "normalisation_ensemble": {m: list(f) for m, f in trainer.normalisation_ensemble.items()},
                "every_piece": scores["dice"], "largest_piece": scores["dice_largest_piece"],
                "as_delivered": scores.get("dice_as_delivered")}


def markdown(rows: list[dict]) -> str:
    """A row per run and modality; each cell the organ's Dice every piece -> largest piece (-> as delivered, where
    the labels have an organ layout)."""
    organs = [o for o in next(iter(rows[0]["every_piece"].values())) if o != "mean"]
    lines = ["| run | step | modality | " + " | ".join([*organs, "mean"]) + " |", "|---|---:|---|" + "---:|" * (len(organs) + 1)]
    for r in rows:
        for modality, every in r["every_piece"].items():
            kept = r["largest_piece"][modality]
            delivered = (r.get("as_delivered") or {}).get(modality)
            cells = [f"{every[o]:.3f} -> {kept[o]:.3f}" + (f" -> {delivered[o]:.3f}" if delivered else "") for o in [*organs, "mean"]]
            lines.append(f"| {r['run']} | {r['step']} | {modality} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A run's last checkpoint scored every piece and largest piece on its validation cases.")
    parser.add_argument("--run", action="append", required=True, type=run_and_config, help="RUN_FOLDER=CONFIG (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--normalisation-ensemble", type=normalisation_option, action="append", default=[],
                        metavar="MODALITY=T,T,...", help="predict that modality as the mean of these normalisations (repeat)")
    args = parser.parse_args(argv)
    ensemble = dict(args.normalisation_ensemble)
    rows = [score_checkpoint(run, config, ensemble) for run, config in args.run]
    cases = sorted({c for r in rows for c in r["cases"]})
    text = (
        "# Runs' last checkpoints: every piece and largest piece\n\n"
        f"Validation Dice in model space on each run's validation cases ({', '.join(cases)}), from one prediction "
        "per case: every piece the network calls an organ (the in-run `dice`) -> each organ's largest piece alone "
        "-> the piece the `Segmenter` keeps (the largest unless the organ layout finds it out of place; what the "
        "bundle delivers). Regenerate: `python training/checkpoint_validation.py "
        + " ".join(f"--run {run}={config}" for run, config in args.run)
        + normalisation_args(ensemble)
        + f" --out {args.out}`. Each case predicted as the run's bundle would segment it"
        + (f", with the normalisation ensemble {ensemble}" if ensemble else "") + ".\n\n" + markdown(rows) + "\n"
    )
    save_results(args.out, "checkpoint_validation", rows, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
