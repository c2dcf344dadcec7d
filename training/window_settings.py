"""How much a bundle's Dice on the unseen real scans depends on where its sliding windows fall.

    python training/window_settings.py --bundle Resources/Models/abdomen-ummkd-synth-3.3.0.zip \
        --setting normal= --setting overlap0.25=overlap:0.25 --setting windows2=window_scale:2 --out OUT

Each ``--setting NAME=KEY:VALUE,...`` is a :class:`~MultiModalSegLib.inference.segmenter.Quality`
(``overlap``, ``mode``, ``window_scale``, ``spacing_scale``; empty: the normal quality, the bundle's own
overlap and blending) and whether the ``Segmenter`` chooses each organ's piece with its organ layout
(``organ_layout:1``, the default) or by size alone (``organ_layout:0``; :mod:`MultiModalSegLib.inference.organ_layout`).
Every bundle segments every real scan it did not train on under every setting, through
the ordinary ``Segmenter`` (one piece of each organ kept, as it keeps them), and each organ's Dice is written per
setting, beside the spread over the settings (highest minus lowest). A network whose figure moves
with the overlap or the window size is judged by where its windows happened to fall as much as by
what it learnt; one that holds is not. Writes ``window_settings.md`` and ``window_settings.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import save_results  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS  # noqa: E402
from MultiModalSegLib.metrics import evaluate_labels  # noqa: E402
from training.evaluate_real_scans import trained_case_names  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

KEYS = {"overlap": float, "mode": str, "window_scale": int, "spacing_scale": float, "organ_layout": int}


def named_setting(text: str) -> tuple[str, dict]:
    """``name=key:value,...`` from the command line: the setting's name and its ``Quality`` fields."""
    name, sep, body = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=KEY:VALUE,... (e.g. windows2=window_scale:2, or normal=)")
    fields = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        if key not in KEYS:
            raise argparse.ArgumentTypeError(f"{text!r}: unknown key {key!r}; use {', '.join(KEYS)}")
        try:
            fields[key] = KEYS[key](value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {key} takes a {KEYS[key].__name__}, not {value!r}") from None
    return name, fields


def read_scans(scans: list, root: Path) -> dict:
    """Per scan name, its image and its reference labels on the image's grid (read once for every bundle)."""
    from MultiModalSegLib.io import read_image

    volumes = {s.name: read_image(s.image(root)) for s in scans}
    return {s.name: (volumes[s.name], s.reference(volumes[s.name], root)) for s in scans}


def score(bundle: Path, settings: dict[str, dict], scans: list, images: dict) -> dict:
    """Per unseen scan, per setting, each scored organ's Dice; the model's name; the spread per organ.
    ``images``: :func:`read_scans`' images and references."""
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.inference.segmenter import Quality

    segmenters = {name: Segmenter(bundle, device="cpu", amp=False, organ_layout=bool(fields.get("organ_layout", 1)),
                                  quality=Quality(**{k: v for k, v in fields.items() if k != "organ_layout"}))
                  for name, fields in settings.items()}
    meta = next(iter(segmenters.values())).bundle.metadata  # loaded and sha256-checked by the Segmenter
    trained = trained_case_names(meta)
    dice: dict[str, dict[str, dict[str, float]]] = {}
    moved: dict[str, dict[str, list[str]]] = {}  # scan -> setting -> organs whose largest piece was dropped as out of place
    for scan in scans:
        if scan.name in trained:
            continue
        volume, reference = images[scan.name]
        dice[scan.name], moved[scan.name] = {}, {}
        for name, seg in segmenters.items():
            result = seg.segment(volume, scan.modality)
            metrics = evaluate_labels(result.labels.array, reference, ABDOMEN_LABELS, volume.spacing)
            dice[scan.name][name] = {o: round(float(metrics[o]["dice"]), 4) for o in scan.organs}
            if result.out_of_place:
                moved[scan.name][name] = list(result.out_of_place)
    spread = {s: {o: round(max(d[o] for d in by.values()) - min(d[o] for d in by.values()), 4) for o in next(iter(by.values()))}
              for s, by in dice.items()}
    return {"bundle": str(bundle), "model": f"{meta['name']} {meta['version']}", "dice": dice, "spread": spread,
            "out_of_place": moved}


def markdown(rows: list[dict], settings: list[str], scans: list) -> str:
    """One row per bundle and unseen scan: each organ's Dice under each setting (in ``settings``' order), then the spread."""
    lines = ["| model | scan | organ | " + " | ".join(settings) + " | spread |", "|---|---|---|" + "---:|" * (len(settings) + 1)]
    for r in rows:
        for s in scans:
            if s.name not in r["dice"]:
                continue
            for o in s.organs:
                cells = [f"{r['dice'][s.name][name][o]:.3f}" for name in settings]
                lines.append(f"| `{r['model']}` | {s.name} | {o} | " + " | ".join(cells) + f" | {r['spread'][s.name][o]:.3f} |")
    moved = [f"`{r['model']}` {scan} {name}: {', '.join(organs)}" for r in rows
             for scan, by in r.get("out_of_place", {}).items() for name, organs in by.items()]
    if moved:  # where the organ layout overruled the size of the pieces
        lines += ["", "Organs whose largest piece was dropped as out of place (the organ layout): " + "; ".join(moved) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dice of bundles on the unseen real scans under several sliding-window settings.")
    parser.add_argument("--bundle", action="append", required=True, type=Path, help="a bundle (repeatable)")
    parser.add_argument("--setting", action="append", required=True, type=named_setting, metavar="NAME=KEY:VALUE,...",
                        help="a sliding-window setting (repeatable; keys: overlap, mode, window_scale; NAME= alone: normal)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help=f"the real scans' folder (default {SHARED_DATA})")
    args = parser.parse_args(argv)
    settings = dict(args.setting)
    if len(settings) != len(args.setting):
        parser.error("give each setting its own name")
    scans = [s for s in REAL_SCANS if s.image(args.data).is_file()]
    if not scans:
        parser.error(f"no real scans under {args.data}; pass --data with the folder of ../shared/data")
    images = read_scans(scans, args.data)
    rows = [score(b, settings, scans, images) for b in args.bundle]
    described = "; ".join(f"`{n}`: " + (", ".join(f"{k} {v}" for k, v in f.items()) or "the normal quality") for n, f in settings.items())
    text = (
        "# Dice under several sliding-window settings\n\n"
        "Dice against the TotalSegmentator pseudo-labels of the real scans each bundle never trained on, through the "
        "ordinary `Segmenter` on the CPU (one piece of each organ kept: the largest, unless the organ layout finds it out "
        "of place), under each setting (" + described + "); "
        "spread: highest minus lowest over the settings. Regenerate: `python training/window_settings.py "
        + " ".join(f"--bundle {b}" for b in args.bundle)
        + "".join(f" --setting {n}=" + ",".join(f"{k}:{v}" for k, v in f.items()) for n, f in settings.items())
        + f" --out {args.out}`.\n\n" + markdown(rows, list(settings), scans) + "\n"
    )
    save_results(args.out, "window_settings", rows, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
