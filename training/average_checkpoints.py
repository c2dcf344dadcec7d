"""The mean of a run's saved checkpoints as a candidate bundle: weight averaging after the fact.

    python training/average_checkpoints.py --bundle training/runs-in-progress/abdomen-ummkd-synth-26/bundle \
        --checkpoint 782172b:training/runs-in-progress/abdomen-ummkd-synth-26/checkpoints/last.pt \
        --checkpoint 5298939:training/runs-in-progress/abdomen-ummkd-synth-26/checkpoints/last.pt \
        --checkpoint training/runs-in-progress/abdomen-ummkd-synth-26/checkpoints/last.pt \
        --version 26.2.0 --out training/runs/candidates/abdomen-ummkd-synth-26-average

A run that spans sessions commits its checkpoint at the end of each (``REV:PATH`` reads one from the
repository's history with ``git show``; a plain path reads a file). The network weights of each
(``weights_only=True``) are averaged, as a recipe's ``weight_average`` does during a run
(:mod:`MultiModalSegLib.training.weight_average`, stochastic weight averaging), and written with the
metadata of ``--bundle`` (the run's own bundle: the network, labels, profiles and inference the weights
belong to) under ``--version``; ``training.weight_average`` records each checkpoint's source, step and
sha256, and the run's validation figures, which belong to its last weights, are dropped. The checkpoints
must hold the bundle's network (every weight, the same shapes) at different steps. An existing ``--out``
is refused (``--overwrite`` replaces it). For evaluation: no manifest entry, no report.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.bundle import load_bundle, save_bundle  # noqa: E402
from MultiModalSegLib.errors import MMSegError  # noqa: E402
from MultiModalSegLib.training.checkpoint import load_checkpoint  # noqa: E402
from MultiModalSegLib.training.weight_average import WeightAverage  # noqa: E402


def read_source(source: str) -> bytes:
    """The bytes of a checkpoint file, or of ``REV:PATH`` in the history of the current repository."""
    if Path(source).is_file():
        return Path(source).read_bytes()
    rev, sep, path = source.partition(":")
    if not sep:
        raise SystemExit(f"{source}: no such file; give a checkpoint file or REV:PATH (a commit and the file's path in it)")
    done = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    if done.returncode:
        raise SystemExit(f"{source}: git show could not read it ({done.stderr.decode().strip()}); give REV:PATH of a "
                         "committed checkpoint, run inside the repository")
    return done.stdout


def network_weights(state: dict, like: dict, source: str) -> dict:
    """The weights of the bundle's network (``like``) in a checkpoint's method state (keys under a prefix)."""
    method = state.get("method", {})
    first = next(iter(like))
    prefixes = {k[: -len(first)] for k in method if k.endswith(first)}
    for prefix in sorted(prefixes, key=len):
        found = {k: method.get(prefix + k) for k in like}
        if all(v is not None and v.shape == like[k].shape for k, v in found.items()):
            return found
    raise SystemExit(f"{source}: its weights are not those of the bundle's network (other names or shapes); give "
                     "checkpoints of the run that wrote --bundle")


def average(sources: list[str], like: dict) -> tuple[dict, list[dict]]:
    """The mean of the checkpoints' network weights (dtypes of ``like``) and a record of each checkpoint."""
    mean = WeightAverage(start=1, every=1)
    records = []
    for source in sources:
        raw = read_source(source)
        state = load_checkpoint(source, raw, fix="give a run's last.pt")
        records.append({"source": source, "step": int(state["step"]), "sha256": hashlib.sha256(raw).hexdigest()})
        mean.update(network_weights(state, like, source))
    steps = [r["step"] for r in records]
    if len(set(steps)) < len(steps):
        raise SystemExit(f"checkpoints of the same step given twice (steps {steps}): give each saved step once")
    return mean.averaged(like), records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path, help="the run's bundle (folder or zip): metadata and network")
    p.add_argument("--checkpoint", action="append", required=True, metavar="FILE|REV:PATH",
                   help="a checkpoint of that run (repeat; two or more)")
    p.add_argument("--version", required=True, help="the version the averaged bundle records")
    p.add_argument("--out", required=True, type=Path, help="the bundle to write (a folder, or a .zip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    if len(args.checkpoint) < 2:
        raise SystemExit("give two or more --checkpoint: one checkpoint is its run's last weights, not a mean")
    try:
        bundle = load_bundle(args.bundle)
        if any(k.endswith(("running_mean", "running_var")) for k in bundle.state_dict):
            raise SystemExit(f"{args.bundle}: its network keeps BatchNorm running statistics, whose mean is not the "
                             "statistics of the mean weights; averaging serves networks with a per-image normalisation")
        weights, records = average(args.checkpoint, dict(bundle.state_dict))
        meta = dict(bundle.metadata, version=args.version, metrics={})
        meta["training"] = {**meta.get("training", {}), "weights": f"the mean of {len(records)} checkpoints",
                            "weight_average": {"steps": sorted(r["step"] for r in records), "checkpoints": records}}
        out = save_bundle(args.out, meta, weights, overwrite=args.overwrite)
    except MMSegError as error:
        raise SystemExit(str(error)) from None
    print(f"{out}: {meta['name']} {meta['version']}, the mean of steps {', '.join(str(r['step']) for r in records)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
