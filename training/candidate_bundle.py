"""A candidate's bundle with another declared inference, for evaluation: the same weights, no release.

    python training/candidate_bundle.py --bundle training/runs-in-progress/abdomen-ummkd-synth-25/bundle \
        --version 25.1.0 --normalisation-ensemble MR=0,0.5,1 \
        --out training/runs/candidates/abdomen-ummkd-synth-25-normalisation-ensemble

Writes a copy of ``--bundle`` (a folder or zip) whose metadata records ``inference.polarity_ensemble``
(``--polarity-ensemble MR``) or ``inference.normalisation_ensemble`` (``--normalisation-ensemble MR=0,0.5,1``),
as ``package_model.py`` does for a release, and ``--version`` in place of the recorded one, so that the
evaluation scripts (``evaluate_real_scans.py``, ``external_liver_ct.py``, ``external_kidney_mr.py``) score
the model as such a release would segment. Nothing else changes: the weights keep their bytes, and
``training.inference_from`` records the source bundle's name, version and sha256 and the settings changed
(the metadata and weights are copied; files a zip holds besides them, such as its report, are not).
An existing ``--out`` is refused (``--overwrite`` replaces it). No manifest entry, no report: a release is
``package_model.py``'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "training"))

from package_model import inference_args, normalisation_option, released_metadata  # noqa: E402

from MultiModalSegLib.bundle import bundle_sha256, load_bundle, save_bundle  # noqa: E402
from MultiModalSegLib.errors import MMSegError  # noqa: E402


def candidate_metadata(meta: dict, source_sha256: str, version: str | None, polarity_ensemble: list[str],
                       normalisation_ensemble: dict[str, list[float]]) -> dict:
    """``meta`` with the inference settings and version given (:func:`package_model.released_metadata`) and
    ``training.inference_from``: where it came from and what changed."""
    if not (version or polarity_ensemble or normalisation_ensemble):
        raise SystemExit("nothing to change: give --normalisation-ensemble, --polarity-ensemble or --version")
    out = released_metadata(meta, version, polarity_ensemble, normalisation_ensemble)
    changed = {k: v for k, v in out["inference"].items() if meta.get("inference", {}).get(k) != v}
    out["training"] = {**meta.get("training", {}), "inference_from": {
        "name": meta["name"], "version": meta["version"], "sha256": source_sha256, "inference": changed}}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path, help="the candidate's bundle (folder or zip)")
    p.add_argument("--out", required=True, type=Path, help="the bundle to write (a folder, or a .zip)")
    p.add_argument("--version", help="the version the copy records (default: the bundle's)")
    p.add_argument("--polarity-ensemble", action="append", default=[], metavar="MODALITY",
                   help="record inference.polarity_ensemble for this modality (repeat)")
    p.add_argument("--normalisation-ensemble", action="append", default=[], type=normalisation_option, metavar="MODALITY=T,T,...",
                   help="record inference.normalisation_ensemble: this modality normalised at these fractions (repeat)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)

    try:
        bundle = load_bundle(args.bundle)
        meta = candidate_metadata(dict(bundle.metadata), bundle_sha256(args.bundle), args.version, args.polarity_ensemble,
                                  dict(args.normalisation_ensemble))
        out = save_bundle(args.out, meta, bundle.state_dict, overwrite=args.overwrite)
    except MMSegError as error:
        raise SystemExit(str(error)) from None
    changes = inference_args(args.polarity_ensemble, dict(args.normalisation_ensemble))
    print(f"{out}: {meta['name']} {meta['version']}, the weights of {args.bundle}{changes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
