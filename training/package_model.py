"""Package a finished training run as a shipped model: report, measured figures, manifest entry.

    python training/package_model.py --run training/runs/abdomen-ummkd \
        --out Resources/Models/abdomen-ummkd-1.0.0.zip --default

    python training/package_model.py --run RUN --bundle SHIPPED.zip --version X.Y.Z --polarity-ensemble MR \
        --report training/reports/NAME-X.Y.Z --out Resources/Models/NAME-X.Y.Z.zip

Writes, from the run folder alone (nothing is typed by hand):
- ``training/reports/<name>/loss.png`` and ``report.md``: loss curves, validation Dice per organ per
  modality on held-out phantoms (from ``progress.jsonl``), Dice / HD95 / ASSD on the real samples;
- the bundle zip with the report inside and the measured figures in ``metadata.json``;
- the entry of ``Resources/Models.json`` (sha256 of the zip, CPU seconds measured here).

``--bundle`` takes the weights and metadata from that bundle instead of the run's own export (a
shipped model released again with another inference setting: ``--polarity-ensemble MR`` records
``inference.polarity_ensemble``, :mod:`MultiModalSegLib.data.polarity`; ``--normalisation-ensemble MR=0,0.5,1``
records ``inference.normalisation_ensemble``, :func:`MultiModalSegLib.data.profile_jitter.normalize_blended`); ``--version`` and
``--description`` replace the recorded ones; ``--report`` is the report folder (default
``training/reports/<name>``). Every figure is measured on the bundle as written (under a trial name, as
the manifest may already list the release with another sha256).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.bundle import bundle_sha256, file_sha256, load_bundle, save_bundle  # noqa: E402
from MultiModalSegLib.cli.demo import SAMPLES, score_sample  # noqa: E402
from MultiModalSegLib.dropped_pieces import SOURCE_PREFIX  # noqa: E402
from MultiModalSegLib.inference import Segmenter  # noqa: E402
from MultiModalSegLib.models import add_to_manifest  # noqa: E402
from MultiModalSegLib.provenance import path_like_strings, provenance_sections  # noqa: E402
from MultiModalSegLib.training.progress import read_progress  # noqa: E402
from MultiModalSegLib.training.validation import validation_markdown  # noqa: E402
from training.dropped_pieces_option import row_choice  # noqa: E402


def loss_plot(records: list[dict] | list[list[dict]], path: Path, titles: list[str] | None = None) -> None:
    """Training losses and validation Dice of a run; of an ensemble's runs (a list of runs' records, one row
    each, titled ``titles``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = records if records and isinstance(records[0], list) else [records]
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 4 * len(runs)), squeeze=False)
    for (a, b), run, title in zip(axes, runs, titles or [""] * len(runs), strict=True):
        _run_curves(a, b, run, title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _run_curves(a, b, records: list[dict], title: str) -> None:
    """One run's losses on ``a`` and validation Dice on ``b``."""
    steps = [r for r in records if r["event"] == "step"]
    vals = [r for r in records if r["event"] == "validation"]
    for key in steps[-1]["losses"]:
        a.plot([r["step"] for r in steps], [r["losses"][key] for r in steps], label=key, lw=1)
    a.set_xlabel("step")
    a.set_title(f"{title}training losses", fontsize=10)
    a.legend()
    for modality in vals[-1]["dice"] if vals else []:
        b.plot([r["step"] for r in vals], [r["dice"][modality]["mean"] for r in vals], marker="o", label=modality)
    b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.set_title(f"{title}validation Dice (the run's validation cases, mean of organs)", fontsize=10)
    b.legend()


def check_overlap(records: list[dict]) -> float:
    """The sliding-window overlap of a run's in-run checks: recorded since the checks run the bundle's windows
    (0.5); runs before that checked at 0.25 and recorded nothing."""
    return next((r.get("overlap", 0.25) for r in records if r["event"] == "validation"), 0.25)


def training_seconds(records: list[dict]) -> float:
    """Wall seconds of training summed over the sessions of a run (each ``start`` opens one)."""
    total, session = 0.0, 0.0
    for r in records:
        if r["event"] == "start":
            total, session = total + session, 0.0
        elif r["event"] == "step":
            session = max(session, r.get("elapsed_s", 0.0))
    return total + session


def session_list(records: list[dict]) -> str:
    """``START -> PLANNED`` for each session of a run; where the sessions that computed steps did so in
    different precisions (a run resumed on another processor or on a GPU), each names its own (a session
    begun at its planned length, which only exports the bundle again, does not count)."""
    starts = [r for r in records if r["event"] == "start"]
    mixed = len({r.get("precision", "float32") for r in starts if r["step"] < r["steps"]}) > 1
    return ", ".join(f"{r['step']} -> {r['steps']}" + (f" in {r.get('precision', 'float32')}" if mixed else "")
                     for r in starts)


def real_sample_metrics(bundle_path: Path, repeats: int = 2) -> tuple[dict, dict]:
    """Metrics against the shipped pseudo-labels, and the best of ``repeats`` CPU timings."""
    seg = Segmenter(bundle_path, device="cpu")
    results, seconds = {}, {}
    for case in SAMPLES:
        times = []
        for _ in range(repeats):
            image, out, _, results[case] = score_sample(seg, case)
            times.append(out.seconds)
        seconds[f"{case} ({'x'.join(map(str, image.size))})"] = round(min(times), 2)
    return results, seconds


def manifest_metrics(metrics: dict) -> dict:
    """The manifest's accuracy summary, from the bundle's ``metrics``: mean validation Dice per
    modality, and mean Dice over the scored organs per real scan (``real_scans``: at normal quality,
    with the scan's role; ``real_samples`` of older bundles)."""
    def mean_dice(organs: dict) -> float:
        values = [m["dice"] for m in organs.values() if m.get("dice") is not None and not np.isnan(m["dice"])]
        return round(float(np.mean(values)), 4)

    out = {"validation_mean_dice": {m: round(float(row["mean"]), 4) for m, row in metrics.get("validation_dice", {}).items()}}
    if "real_scans" in metrics:
        out["real_scans_mean_dice"] = {
            case.replace(", normal)", ")"): mean_dice(organs) for case, organs in metrics["real_scans"].items() if case.endswith(", normal)")
        }
    if "real_samples" in metrics:
        out["real_samples_mean_dice"] = {case: mean_dice(organs) for case, organs in metrics["real_samples"].items()}
    return out


def validation_case_names(training: dict) -> list[str]:
    """The validation cases of a run, from its bundle's data set records: real cases by name, phantoms by count."""
    names = []
    for record in training.get("datasets", []):
        if not isinstance(record, dict):
            continue
        if record.get("origin") == "phantom":
            n = int(record.get("phantoms", {}).get("validation", 0))
            names += [f"{n} phantoms per modality"] if n else []
        else:
            names += record.get("validation", [])
    return names


def real_scan_rows(bundle_path: Path) -> list[dict]:
    """Every real labelled scan of ``../shared/data``, normal and fast quality, with its role
    (``training/evaluate_real_scans.py``)."""
    sys.path.insert(0, str(REPO / "training"))
    import evaluate_real_scans

    return evaluate_real_scans.score(bundle_path, evaluate_real_scans.real_scans())


def real_scan_metrics(rows: list[dict]) -> dict:
    """``"scan (role, quality)" -> organ -> {dice, hd95, assd}``, unseen scans first."""
    order = {"validation": 0, "left out": 1, "train": 2}
    rows = sorted(rows, key=lambda r: (order[r["role"]], r["scan"], r["quality"] != "normal"))
    return {f"{r['scan']} ({r['role']}, {r['quality']})": r["metrics"] for r in rows}


def packaged_metadata(meta: dict, real: dict, rows: list[dict], cpu_seconds: dict, train_seconds: float,
                      bundle: Path | None = None) -> dict:
    """The shipped bundle's metadata from the run bundle's: the recipe's name and description (a run
    of a shipped model's recipe exports under a name of its own, see ``MultiModalSegLib.naming``), the
    measured metrics and times. Its provenance must name no path (``MultiModalSegLib.provenance``): a
    run bundle exported by an older version, which recorded paths, is rewritten the way
    ``training/scrub_provenance.py`` rewrote the shipped ones (given its ``bundle``); what cannot be
    rewritten is refused."""
    meta = dict(meta)
    if bundle is not None and path_like_strings(provenance_sections(meta)):
        sys.path.insert(0, str(REPO / "training"))
        import scrub_provenance

        meta = scrub_provenance.scrub(meta, bundle_sha256(bundle), Path(bundle).parent)
    intended = meta["training"].get("config", {}).get("bundle", {})
    meta["name"] = intended.get("name", meta["name"])
    meta["description"] = intended.get("description", meta["description"])
    validation = meta.get("metrics", {}).get("validation_dice") or {}
    val_cases = ", ".join(validation_case_names(meta["training"])) or "the run's validation split"
    synthesis = meta["training"].get("config", {}).get("synthesis")
    meta["metrics"] = {
        "real_scans": real_scan_metrics(rows),
        "real_scans_source": "the real labelled scans of the development data (evaluate_real_scans.py) against "
        "TotalSegmentator pseudo-labels; role per scan from this model's training provenance; "
        + SOURCE_PREFIX + "/".join(sorted({row_choice(r) for r in rows})),
        "validation_dice": validation,
        "validation_source": f"the run's validation cases ({val_cases}), model space, last validation of the run",
    }
    if not synthesis:  # the older recipes' real samples were training cases
        meta["metrics"]["real_samples"] = {c: {o: {k: (None if v is None or np.isnan(v) else round(v, 4)) for k, v in m.items()} for o, m in r.items()} for c, r in real.items()}
        meta["metrics"]["real_samples_source"] = "Resources/SampleData against TotalSegmentator pseudo-labels; these two scans were also training cases"
    meta["training"] = {**meta["training"], "cpu_seconds_measured": cpu_seconds,
                        "training_hours": {"device": meta["training"]["device"], "wall_hours": round(train_seconds / 3600, 2)}}  # fmt: skip
    left = path_like_strings(provenance_sections(meta))
    if left:
        raise SystemExit(f"the run's bundle records paths in its provenance ({'; '.join(left)}); it cannot be shipped. "
                         "Retrain it with this version of MultiModalSeg or rewrite it with training/scrub_provenance.py.")  # fmt: skip
    return meta


def released_metadata(meta: dict, version: str | None, polarity_ensemble: list[str],
                      normalisation_ensemble: dict[str, list[float]] | None = None) -> dict:
    """``meta`` with the released ``version`` and, when given, ``inference.polarity_ensemble`` and
    ``inference.normalisation_ensemble``."""
    meta = {**meta, "inference": dict(meta.get("inference", {}))}
    if version:
        meta["version"] = version
    if polarity_ensemble:
        meta["inference"]["polarity_ensemble"] = sorted(set(polarity_ensemble))
    if normalisation_ensemble:
        meta["inference"]["normalisation_ensemble"] = {m: list(f) for m, f in sorted(normalisation_ensemble.items())}
    return meta


def normalisation_option(text: str) -> tuple[str, list[float]]:
    """``MR=0,0.5,1`` -> ``("MR", [0.0, 0.5, 1.0])``; one sentence for a malformed value."""
    modality, _, fractions = text.partition("=")
    try:
        values = [float(f) for f in fractions.split(",")]
    except ValueError:
        values = []
    if not modality or len(values) < 2 or not all(0.0 <= v <= 1.0 for v in values) or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give MODALITY=t1,t2,... with two or more different fractions in [0, 1], "
                                         "e.g. MR=0,0.5,1.")
    return modality, values


def normalisation_args(ensemble: dict[str, list[float]]) -> str:
    """``{"MR": [0, 0.5, 1]}`` as the command-line options that give it: `` --normalisation-ensemble MR=0,0.5,1``."""
    return "".join(f" --normalisation-ensemble {m}={','.join(f'{v:g}' for v in f)}" for m, f in sorted(ensemble.items()))


def inference_args(polarity_ensemble: list[str], normalisation_ensemble: dict[str, list[float]]) -> str:
    """The ``--polarity-ensemble`` and ``--normalisation-ensemble`` options that declare these ensembles."""
    return "".join(f" --polarity-ensemble {m}" for m in sorted(set(polarity_ensemble))) + normalisation_args(normalisation_ensemble)


def release_args(args: argparse.Namespace) -> str:
    """The options of a release from another bundle, as the report's regeneration command gives them."""
    def rel(path: Path) -> Path:
        return path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path

    parts = [f" --bundle {rel(args.bundle)}"] if args.bundle else []
    parts += [f" --version {args.version}"] if args.version else []
    parts += [inference_args(args.polarity_ensemble, dict(args.normalisation_ensemble))]
    parts += [f" --report {rel(args.report)}"] if args.report else []
    parts += [' --description "..."'] if args.description else []
    parts += [' --note "..."'] if args.note else []
    return "".join(parts)


def member_runs(bundle, runs: list[Path]) -> list[dict]:
    """For an ensemble bundle (``MultiModalSegLib.bundle_members``), each member with the run that trained it
    (``runs`` in the members' order): label, records, training provenance, run folder. Empty for a single
    network, which takes one run. One sentence when the runs do not match the members."""
    recorded = bundle.metadata.get("members") or []
    if len(runs) != max(len(recorded), 1):
        names = ", ".join(f"{m['name']} {m['version']}" for m in recorded) or bundle.name
        raise SystemExit(f"{bundle.path} holds {max(len(recorded), 1)} network(s) ({names}); give one --run per network, "
                         f"in that order (got {len(runs)}).")
    if not recorded:
        return []
    return [{"label": f"member {i + 1}, {m['name']} {m['version']}", "records": read_progress(run / "progress.jsonl"),
             "training": m["training"], "run": run} for i, (m, run) in enumerate(zip(recorded, runs, strict=True))]


def config_argument(training: dict) -> str:
    """The recipe a bundle's ``training`` block names, as ``mmseg train --config`` takes it."""
    config_name = training.get("config_file") or "abdomen_ummkd_default.json"  # recorded by name
    return f"training/configs/{config_name}" if (REPO / "training" / "configs" / config_name).is_file() else config_name


def repo_relative(path: Path) -> Path:
    return path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path


def member_lines(members: list[dict]) -> list[str]:
    """A paragraph per member of an ensemble: its recipe, steps, data shares, wall time and sessions, the
    command that trains it, and its last in-run validation."""
    lines = []
    for m in members:
        t, cfg = m["training"], m["training"].get("config", {})
        seconds = training_seconds(m["records"])
        last = next((r for r in reversed(m["records"]) if r["event"] == "validation"), None)
        mix = cfg.get("synthesis", {}).get("mix")
        lines += [
            f"- **{m['label']}**: {t.get('steps')} steps, batch {cfg.get('batch_size')} per modality, seed {t.get('seed')}, "
            f"trained on {t.get('device')}; training cases per modality {json.dumps(t.get('cases'))}"
            + (f"; shares of real, synthesised and phantom items {json.dumps(mix)}" if mix else "")
            + (f"; weights averaged over steps {t['weight_average']['steps'][0]}-{t['weight_average']['steps'][-1]}"
               if isinstance(t.get("weight_average"), dict) and t["weight_average"].get("steps") else "")
            + f". Wall time {seconds / 60:.0f} min in sessions (start step -> planned length) "
            + session_list(m["records"])
            + f". `mmseg train --config {config_argument(t)} --out {repo_relative(m['run'])}`.",
            "",
            *([f"  Last validation in the run (step {last['step']}):", "", validation_markdown(last["dice"]), ""] if last else []),
        ]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, action="append",
                   help="the run folder; for an ensemble bundle one per member, in the order of its members (repeat)")
    p.add_argument("--out", required=True, type=Path, help="bundle zip to write (under Resources/Models/)")
    p.add_argument("--default", action="store_true", help="make it the manifest's default model")
    p.add_argument("--note", default="", help="a paragraph for the report (e.g. what changed between sessions)")
    p.add_argument("--bundle", type=Path, help="weights and metadata from this bundle (default: RUN/bundle)")
    p.add_argument("--version", help="the released version (default: the bundle's)")
    p.add_argument("--description", help="the released description (default: the recipe's)")
    p.add_argument("--polarity-ensemble", action="append", default=[], metavar="MODALITY",
                   help="record inference.polarity_ensemble for this modality (repeat)")
    p.add_argument("--normalisation-ensemble", action="append", default=[], type=normalisation_option, metavar="MODALITY=T,T,...",
                   help="record inference.normalisation_ensemble: this modality normalised at these fractions (repeat)")
    p.add_argument("--report", type=Path, help="report folder (default: training/reports/<name>)")
    p.add_argument("--training-data", help="the manifest's training_data text")
    p.add_argument("--intended-use", help="the manifest's intended_use text")
    p.add_argument("--limitations", help="the manifest's limitations text")
    args = p.parse_args()
    missing = [f"--{k.replace('_', '-')}" for k in ("training_data", "intended_use", "limitations") if not getattr(args, k)]
    if args.default and missing:  # the default model's card is what a clinician reads first
        p.error(f"a default model's manifest entry needs {', '.join(missing)}: give the text the model card shows")

    source = args.bundle or args.run[0] / "bundle"
    bundle = load_bundle(source)
    meta = dict(bundle.metadata)
    name = meta["training"].get("config", {}).get("bundle", {}).get("name", meta["name"])  # the recipe's name
    members = member_runs(bundle, args.run)
    records = members[0]["records"] if members else read_progress(args.run[0] / "progress.jsonl")  # read once
    report_dir = args.report.resolve() if args.report else REPO / "training" / "reports" / name
    report_dir.mkdir(parents=True, exist_ok=True)
    if members:
        loss_plot([m["records"] for m in members], report_dir / "loss.png", [f"member {i + 1}: " for i in range(len(members))])
    else:
        loss_plot(records, report_dir / "loss.png")

    measured = source
    if args.version or args.polarity_ensemble or args.normalisation_ensemble:  # measure the bundle as it will ship
        meta = released_metadata(meta, args.version, args.polarity_ensemble, dict(args.normalisation_ensemble))
        import tempfile

        # measured under a name of its own: the manifest may already list this name and version with another sha256
        trial = {**meta, "name": f"{meta['name']}-release-trial"}
        measured = save_bundle(Path(tempfile.mkdtemp(prefix="package-model-")) / "bundle", trial, bundle.state_dict)
    real, cpu_seconds = real_sample_metrics(measured)
    rows = [{**r, "bundle": f"{name} {meta['version']}"} for r in real_scan_rows(measured)]
    train_seconds = sum(training_seconds(m["records"]) for m in members) if members else training_seconds(records)
    meta = packaged_metadata(meta, real, rows, cpu_seconds, train_seconds, bundle=source)
    if args.description:
        meta["description"] = args.description
    validation = meta["metrics"]["validation_dice"]
    val_cases = ", ".join(validation_case_names(meta["training"])) or "the run's validation split"
    synthesis = meta["training"].get("config", {}).get("synthesis")
    cfg = meta["training"].get("config", {})
    config_arg = config_argument(meta["training"])
    run_arg = " --run ".join(str(repo_relative(r)) for r in args.run)
    warm = next((r for r in records if r["event"] == "warm_start"), None)
    warm_line = (
        f"Started from the weights of `{Path(warm['bundle']).name}` (method `{warm['method']}`, sha256 {warm['sha256'][:12]}...): "
        f"{warm['copied']} tensors copied, {warm['averaged']} averaged over modalities, {warm['fresh']} freshly initialised "
        "(`MultiModalSegLib/training/warm_start.py`)."
        if warm else None
    )
    sys.path.insert(0, str(REPO / "training"))
    import evaluate_real_scans

    grid = report_dir / "synthesised_samples.png"
    synthesis_lines = [
        "## Training data",
        "",
        f"Each step draws one batch per modality; each item is a real case, a phantom or an image synthesised from a "
        f"label map (`MultiModalSegLib/data/synthesis.py`), with the shares {json.dumps(synthesis['mix'])} "
        f"(sources of label maps: {', '.join(synthesis.get('sources', ['datasets', 'phantoms']))}). "
        f"Datasets: {json.dumps(cfg.get('datasets'))}; phantoms: {json.dumps(cfg.get('phantoms'))}.",
        "",
        *(["Synthesised training patches as the sampler draws them (`python training/synthesis_grid.py --out "
           f"{grid.relative_to(REPO)}`):", "", f"![synthesised samples]({grid.name})", ""] if grid.exists() else []),
    ] if synthesis else []
    single = [
        f"# {name} {meta['version']}: training report",
        "",
        f"Method `{meta['method']}`, network `{meta['network']['name']}` {meta['network']['params'].get('features')}, "
        f"spacing {meta['spacing']} mm, patch {meta['patch_size']} (z, y, x), {meta['training']['steps']} steps, "
        f"batch {cfg.get('batch_size')} per modality, trained on {meta['training']['device']} "
        f"({platform.processor() or platform.machine()}); training cases per modality: {meta['training']['cases']}.",
        f"Training wall time, all sessions of the run: {train_seconds / 60:.0f} min ({train_seconds / 3600:.2f} "
        f"{meta['training']['device'].upper()} hours on a 2-core machine shared with other work) "
        "in sessions (start step -> planned length): "
        + session_list(records)
        + ".",
        "",
        f"Regenerate: `mmseg train --config {config_arg} --out {run_arg}` "
        f"then `python training/package_model.py --run {run_arg}{release_args(args)} --out Resources/Models/"
        f"{args.out.name}{' --default' if args.default else ''}`.",
        "",
        *([warm_line, ""] if warm_line else []),
    ]
    ensemble = [
        f"# {name} {meta['version']}: release report",
        "",
        f"An ensemble of {len(members)} networks of one architecture (method `{meta['method']}`, network "
        f"`{meta['network']['name']}` {meta['network']['params'].get('features')}, spacing {meta['spacing']} mm, patch "
        f"{meta['patch_size']} (z, y, x)), their class probabilities averaged in each window "
        "(`MultiModalSegLib/bundle_members.py`); each member trained from scratch on its own recipe:",
        "",
        *member_lines(members),
        f"Training wall time of all members: {train_seconds / 60:.0f} min ({train_seconds / 3600:.2f} "
        f"{meta['training']['device'].upper()} hours on a 2-core machine shared with other work).",
        "",
        "Regenerate: each member's `mmseg train` above, then `python training/ensemble_bundle.py "
        + " ".join(f"--member MEMBER{i + 1}" for i in range(len(members)))
        + f" --out ENSEMBLE ...` and `python training/package_model.py --run {run_arg}{release_args(args)} --out Resources/Models/"
        f"{args.out.name}{' --default' if args.default else ''}`.",
        "",
    ] if members else []
    report = [
        *(ensemble or single),
        *([args.note, ""] if args.note else []),
        "## Real scans (unseen first)",
        "",
        "Dice against TotalSegmentator pseudo-labels (model outputs, not manual annotations), on each scan's own grid. "
        "`validation`: no recipe trains on it; `left out`: a training scan this recipe excluded (the only unseen "
        "real MR here); `train`: fit, not generalisation. `n/s`: organ cut off in that scan, not scored.",
        "",
        evaluate_real_scans.markdown(rows),
        "",
        "Dice, HD95 and ASSD per organ are in the bundle's `metadata.json` (`metrics.real_scans`).",
        "",
        *([] if members else synthesis_lines),
        "## Training curves",
        "",
        *(["One row per member, in the order above.", ""] if members else []),
        f"Validation during training on {val_cases} (model space, overlap {check_overlap(records)}).",
        "",
        "![losses](loss.png)",
        "",
        *([] if members else ["Last validation:", "", validation_markdown(validation), ""]),
        "## CPU inference seconds (best of 2, this machine)",
        "",
        *[f"- {k}: {v} s" for k, v in cpu_seconds.items()],
        "",
    ]
    (report_dir / "report.md").write_text("\n".join(report))
    if measured != source:
        import shutil

        shutil.rmtree(measured.parent, ignore_errors=True)
    out = save_bundle(
        args.out,
        meta,
        bundle.state_dict,
        extra_files={"report.md": report_dir / "report.md", "loss.png": report_dir / "loss.png",
                     **({"synthesised_samples.png": grid} if synthesis and grid.exists() and not members else {})},
        overwrite=True,
    )
    entry = {
        "name": name,
        "version": meta["version"],
        "description": meta["description"],
        "method": meta["method"],
        "modalities": list(meta["modalities"]),
        "labels": [lab["name"] for lab in meta["labels"]],
        "spacing": meta["spacing"],
        "sha256": file_sha256(out),
        "file": str(out.resolve().relative_to((REPO / "Resources").resolve())),
        "size": out.stat().st_size,
        "licence": meta["licence"],
        "cpu_seconds": cpu_seconds,
        "metrics": manifest_metrics(meta["metrics"]),
        "default": bool(args.default),
    }
    for key in ("training_data", "intended_use", "limitations"):
        if getattr(args, key):
            entry[key] = getattr(args, key)
    add_to_manifest(entry)
    print(json.dumps(entry, indent=2))
    print((report_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
