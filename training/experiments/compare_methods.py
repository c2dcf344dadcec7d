"""Compare every registered method on the phantom bench; write ``results/`` (JSON, report, box plots).

    python training/experiments/compare_methods.py --jobs 2         # the full bench (resumable)
    python training/experiments/compare_methods.py --quick --out DIR  # about a minute: a smoke run
    python training/experiments/compare_methods.py --report-only    # rebuild the report from the runs
    python training/experiments/compare_methods.py --selection --jobs 2  # the longer bench that ranks methods for a default model

The selection bench (:data:`SELECTION`, results in ``results_selection/``) trains every method 16.7
times longer than the full bench, at 4 mm with larger patches, in the ``balanced`` scenario only:
a default model is trained with every case labelled, so that is the scenario that ranks methods
for one. Each method trains with its own recipe (``training/configs/``): 3e-3 for every method;
``lssc`` also warms up for 100 steps and first trains its Transformer alone on the run's labelled
phantoms (the recipe's ``pretrain``, a stand-in for its paper's pretrained backbone).

Scenarios (after the few-shot table of LSSC, Yang et al., Table 4: all cases of one modality plus
1 or 3 labelled cases of the other): ``balanced`` (N CT + N MR, all labelled), ``scarce_mr_1`` and
``scarce_mr_3`` (N CT + 1 or 3 labelled MR), ``scarce_ct_1`` (N MR + 1 labelled CT). The other
cases of the scarce modality stay in the training set without labels: only a method with
``uses_unlabelled`` (``cmc``) sees them, as the engine's ``"<modality>:unlabelled"`` batches. Which
cases keep their labels is the engine's ``few_shot`` choice with the run seed, the same for every
method.

Every method gets the same data, seed, steps, batch, patch, spacing, optimiser and schedule, and a
network of the same encoder widths (:data:`Bench.features`): the U-Net for the U-Net methods,
``lssc``'s Transformer U-Net from its registry reference builder (``LSSC.reference_network``),
``cmc``'s own network with the same widths. ``mulmodseg`` uses one-hot class codes (its paper's
Table 1 variant), so that the bench does not depend on the optional text encoder.

Evaluation: every run exports a bundle; the ordinary :class:`Segmenter` segments held-out phantoms
(drawn with a separate seed) and the two real sample scans on their own grids; Dice, HD95 and ASSD
per organ come from :func:`MultiModalSegLib.metrics.evaluate_labels`. The real scans' references
are TotalSegmentator pseudo-labels, remapped with the ``totalsegmentator`` table.

Each (scenario, method) writes ``runs/<scenario>/<method>.json`` when it is done, and its training
folder (``training/runs/experiments/...``) holds checkpoints, so a stopped bench resumes where it
stopped; the report is rebuilt from whatever runs exist after every run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from MultiModalSegLib.atomic import write_text_atomic  # noqa: E402
from MultiModalSegLib.errors import ConfigError, InputError  # noqa: E402
from MultiModalSegLib.labels import ABDOMEN_LABELS, LABEL_REMAPS  # noqa: E402
from training.real_scans import REAL_SCANS, SHARED_DATA  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = REPO / "training" / "runs" / "experiments"
SAMPLES = REPO / "Resources" / "SampleData"
SHARED = SHARED_DATA
ORGANS = [lab.name for lab in ABDOMEN_LABELS]
# Real scans no bench run trains on (training/real_scans.py: name, modality, organs scored): the
# validation CT from ../shared/data, the two training scans of the default models from their copies
# in Resources/SampleData (the bench's runs train on phantoms only).
REAL_CASES = tuple((r.name, r.modality, SHARED if r.project_role == "validation" else SAMPLES, r.organs) for r in REAL_SCANS)
MODALITIES = ("CT", "MR")
METHOD_ORDER = ("individual", "joint", "joint_kd", "y_shaped", "x_shaped", "ummkd", "csa", "lssc", "mulmodseg", "cmc")
BASELINE = "individual"
COMMAND = "nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python training/experiments/compare_methods.py --jobs 2"
RESULTS_SELECTION = HERE / "results_selection"


@dataclass(frozen=True)
class Scenario:
    name: str
    few_shot: dict
    scarce: str | None  # the modality with few labels, if any
    description: str


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("scarce_mr_1", {"MR": 1}, "MR", "all CT labelled + 1 labelled MR (the other MR cases unlabelled)"),
        Scenario("balanced", {}, None, "all CT + all MR labelled"),
        Scenario("scarce_mr_3", {"MR": 3}, "MR", "all CT labelled + 3 labelled MR (the other MR cases unlabelled)"),
        Scenario("scarce_ct_1", {"CT": 1}, "CT", "all MR labelled + 1 labelled CT (the other CT cases unlabelled)"),
    )
}
BEST_SCENARIOS = ("balanced", "scarce_mr_1", "scarce_mr_3")  # the criterion's scenarios


@dataclass(frozen=True)
class Bench:
    """Everything that is the same for every method of a bench."""

    n_train: int = 6  # phantoms per modality in the training set
    n_test: int = 2  # held-out phantoms per modality
    train_seed: int = 7
    test_seed: int = 1001  # held-out phantoms: a separate, fixed seed
    features: list = field(default_factory=lambda: [8, 16, 32, 64])
    spacing: float = 6.0
    patch_size: list = field(default_factory=lambda: [16, 32, 32])
    batch_size: int = 2
    steps: int = 150
    lr: float = 5e-3
    lr_by_method: dict = field(default_factory=dict)  # methods trained at another rate than ``lr``
    patch_by_method: dict = field(default_factory=dict)  # methods whose network needs another patch shape
    warmup_steps: int = 5
    warmup_by_method: dict = field(default_factory=dict)  # methods with another warm-up (steps)
    pretrain_by_method: dict = field(default_factory=dict)  # methods pretrained first (the config's "pretrain")
    seed: int = 0
    threads: int = 1
    scenarios: tuple = tuple(SCENARIOS)
    methods: tuple = METHOD_ORDER
    real_cases: tuple = tuple(c[0] for c in REAL_CASES)

    def lr_of(self, method: str) -> float:
        return self.lr_by_method.get(method, self.lr)

    def patch_of(self, method: str) -> list:
        return list(self.patch_by_method.get(method, self.patch_size))

    def warmup_of(self, method: str) -> int:
        return int(self.warmup_by_method.get(method, self.warmup_steps))


LSSC_PRETRAIN = {"task": "segmentation", "steps": 300, "lr": 3e-3}  # as training/configs/abdomen_lssc.json
FULL = Bench()
SELECTION = Bench(
    n_test=4, spacing=4.0, patch_size=[24, 40, 40], steps=2500, lr=3e-3, warmup_steps=20,
    # lssc's recipe (training/configs/abdomen_lssc.json): a longer warm-up and pretraining of its
    # Transformer, at the rate the other methods use (training/reports/lssc-lr-sweep)
    warmup_by_method={"lssc": 100}, pretrain_by_method={"lssc": LSSC_PRETRAIN},
    # the Transformer's windows need multiples of [16, 32, 32]: the shape of those closest in voxels
    patch_by_method={"lssc": [32, 32, 32]}, scenarios=("balanced",),
)
QUICK = Bench(
    n_train=2, n_test=1, features=[4, 8, 16, 32], spacing=8.0, patch_size=[16, 32, 32], steps=3, warmup_steps=0,
    threads=2, scenarios=("scarce_mr_1",), methods=("individual", "ummkd"), real_cases=("abdomen_mr_01",),
)


def network_for(method: str, features: list) -> tuple[dict, dict]:
    """(network config, method parameters) of ``method`` at encoder widths ``features``."""
    from MultiModalSegLib.methods import get_method

    if method == "lssc":
        return get_method("lssc").reference_network(features), {}
    if method == "cmc":
        return {"name": "cmc", "params": {"features": list(features)}}, {}
    if method == "mulmodseg":
        return {"name": "unet3d", "params": {"features": list(features)}}, {"embedding": "onehot"}
    return {"name": "unet3d", "params": {"features": list(features)}}, {}


def run_config(bench: Bench, scenario: Scenario, method: str, train_json: Path) -> dict:
    network, params = network_for(method, bench.features)
    return {
        "name": f"bench-{scenario.name}-{method}",
        "method": method,
        "method_params": params,
        "network": network,
        "datasets": [str(train_json)],
        "spacing": [bench.spacing] * 3,
        "patch_size": bench.patch_of(method),
        "batch_size": bench.batch_size,
        "augment": True,
        "few_shot": dict(scenario.few_shot),
        "lr": bench.lr_of(method),
        "schedule": {"name": "cosine", "warmup_steps": bench.warmup_of(method)},
        "steps": bench.steps,
        "validate_every": 10**9,
        "checkpoint_every": 25,
        "log_every": 10,
        "seed": bench.seed,
        "device": "cpu",
        "amp": False,
        "threads": bench.threads,
        **({"pretrain": dict(bench.pretrain_by_method[method])} if method in bench.pretrain_by_method else {}),
    }


# ----------------------------------------------------------------------------- data


def prepare_data(bench: Bench, work: Path) -> tuple[Path, Path, float]:
    """Training and held-out phantom datasets (written once); returns their json paths and the CPU s spent."""
    from MultiModalSegLib.data.phantoms import write_phantom_dataset

    train = work / f"phantoms_train_{bench.n_train}_seed{bench.train_seed}" / "dataset.json"
    test = work / f"phantoms_test_{bench.n_test}_seed{bench.test_seed}" / "dataset.json"
    cpu = 0.0
    for path, n, seed in ((train, bench.n_train, bench.train_seed), (test, bench.n_test, bench.test_seed)):
        timing = path.parent / "generation_cpu_s.json"
        if not path.exists():
            t0 = time.process_time()
            write_phantom_dataset(path.parent, n, n, seed)
            timing.write_text(json.dumps({"cpu_s": time.process_time() - t0}))
        cpu += json.loads(timing.read_text())["cpu_s"]
    return train, test, cpu


def test_cases(test_json: Path, real_cases: tuple = tuple(c[0] for c in REAL_CASES)) -> list[dict]:
    """Held-out phantoms and the real scans: name, kind, modality, image, label, remap, organs scored."""
    doc = json.loads(test_json.read_text())
    cases = [
        {"name": Path(c["image"]).name.split(".")[0], "kind": "phantom", "modality": c["modality"],
         "image": str(test_json.parent / c["image"]), "label": str(test_json.parent / c["label"]), "remap": None,
         "organs": ORGANS}
        for c in doc["training"]
    ]
    for name, modality, folder, organs in (c for c in REAL_CASES if c[0] in real_cases):
        if not (folder / name / "image.nii.gz").is_file():
            raise InputError(f"{folder / name / 'image.nii.gz'}: real scan {name} not found; put the project's shared data "
                             "beside the repository (../shared/data) or leave the scan out of the bench's real_cases.")
        cases.append({"name": name, "kind": "real", "modality": modality, "image": str(folder / name / "image.nii.gz"),
                      "label": str(folder / name / "label_totalseg.nii.gz"), "remap": "totalsegmentator",
                      "organs": list(organs)})
    return cases


# ----------------------------------------------------------------------------- one run


def evaluate_bundle(bundle: Path, cases: list[dict]) -> dict:
    """Case -> {kind, modality, metrics: organ -> {dice, hd95, assd}} through the ordinary Segmenter."""
    from MultiModalSegLib.inference.segmenter import Segmenter
    from MultiModalSegLib.io import read_image, read_labelmap
    from MultiModalSegLib.metrics import evaluate_labels, remap_labels

    seg = Segmenter(bundle, device="cpu", amp=False)
    out = {}
    for case in cases:
        volume = read_image(case["image"])
        result = seg.segment(volume, case["modality"])
        ref = read_labelmap(case["label"], reference=volume)
        ref_array = remap_labels(ref.array, LABEL_REMAPS[case["remap"]]) if case["remap"] else np.asarray(ref.array)
        metrics = evaluate_labels(np.asarray(result.labels.array), ref_array, ABDOMEN_LABELS, ref.spacing)
        scored = case.get("organs", ORGANS)  # an organ the scan cuts off is not scored (None, skipped in means)
        out[case["name"]] = {
            "kind": case["kind"], "modality": case["modality"],
            "metrics": {o: {k: (None if math.isnan(v) or o not in scored else v) for k, v in m.items()}
                        for o, m in metrics.items()},
        }
    return out


def run_one(bench: Bench, scenario: Scenario, method: str, train_json: Path, test_json: Path, work: Path, out: Path) -> dict:
    """Train (or resume) one (scenario, method), evaluate its bundle, write its JSON; return it."""
    import torch

    from MultiModalSegLib.training import Trainer
    from MultiModalSegLib.training.config import config_from_dict

    torch.set_num_threads(bench.threads)
    target = out / "runs" / scenario.name / f"{method}.json"
    cfg = config_from_dict(run_config(bench, scenario, method, train_json))
    t0, w0 = time.process_time(), time.time()
    try:
        result = Trainer(cfg, work / scenario.name / method, quiet=True).run()
    except (ConfigError, InputError) as exc:  # e.g. a NaN loss, a patch the network refuses: recorded, the bench goes on
        doc = {"scenario": scenario.name, "method": method, "failed": str(exc), "bench_steps": bench.steps,
               "train_cpu_s": round(time.process_time() - t0, 1), "eval_cpu_s": 0.0,
               "train_wall_s": round(time.time() - w0, 1), "eval_wall_s": 0.0}
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, json.dumps(doc, indent=1) + "\n")
        return doc
    if result.status != "done":
        raise SystemExit(3)
    t1, w1 = time.process_time(), time.time()
    metrics = evaluate_bundle(result.bundle, test_cases(test_json, bench.real_cases))
    t2, w2 = time.process_time(), time.time()
    meta = json.loads((result.bundle / "metadata.json").read_text())
    doc = {
        "scenario": scenario.name, "method": method, "steps": result.step,
        "cases": meta["training"]["cases"],
        "network": meta["network"],
        "parameters": _parameter_count(result.bundle),
        "final_losses": result.last_losses,
        "train_cpu_s": round(t1 - t0, 1), "eval_cpu_s": round(t2 - t1, 1),
        "train_wall_s": round(w1 - w0, 1), "eval_wall_s": round(w2 - w1, 1),
        "note": "CPU and wall times of this process for this invocation (a resumed run counts only its last part)",
        "bundle": str(result.bundle),
        "results": metrics,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, json.dumps(doc, indent=1) + "\n")
    return doc


def _parameter_count(bundle: Path) -> int:
    import torch

    state = torch.load(bundle / "model.pt", map_location="cpu", weights_only=True)
    return int(sum(v.numel() for k, v in state.items() if torch.is_floating_point(v) and "running_" not in k))


# ----------------------------------------------------------------------------- numbers


def run_budget(doc: dict) -> int | None:
    """The bench length (steps) a run document was made for (None for documents that do not say)."""
    return doc.get("bench_steps", doc.get("steps"))


def load_runs(out: Path, failed: bool = False, steps: int | None = None) -> dict[str, dict[str, dict]]:
    """Scenario -> method -> run document, for every finished run under ``out/runs`` (with
    ``failed``: the runs whose training failed instead); with ``steps``, only the runs of a bench
    of that length, so that a bench made longer neither counts nor skips its shorter runs."""
    runs: dict[str, dict[str, dict]] = {}
    for path in sorted((out / "runs").glob("*/*.json")):
        doc = json.loads(path.read_text())
        if ("failed" in doc) == failed and (steps is None or run_budget(doc) == steps):
            runs.setdefault(doc["scenario"], {})[doc["method"]] = doc
    return runs


def is_finished(out: Path, scenario: str, method: str, steps: int) -> bool:
    """Whether ``out`` holds a run (finished or failed) of (scenario, method) for a bench of ``steps``."""
    path = out / "runs" / scenario / f"{method}.json"
    return path.exists() and run_budget(json.loads(path.read_text())) == steps


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def organ_means(run: dict, kind: str, modality: str, metric: str = "dice") -> dict[str, float]:
    """Organ -> mean over the ``kind`` cases of ``modality`` (NaN skipped)."""
    cases = [c for c in run["results"].values() if c["kind"] == kind and c["modality"] == modality]
    return {o: _mean([c["metrics"][o][metric] for c in cases]) for o in ORGANS}


def modality_mean(run: dict, kind: str, modality: str, metric: str = "dice") -> float:
    """Mean over organs of :func:`organ_means`."""
    return _mean(organ_means(run, kind, modality, metric).values())


def overall_dice(run: dict, kind: str = "phantom") -> float:
    """Mean of the CT and the MR mean Dice."""
    return _mean([modality_mean(run, kind, m) for m in MODALITIES])


def claim(runs: dict[str, dict], method: str, modality: str) -> dict:
    """Whether ``method`` beats ``individual`` on held-out ``modality`` Dice (mean over organs)."""
    ours, base = organ_means(runs[method], "phantom", modality), organ_means(runs[BASELINE], "phantom", modality)
    m, b = _mean(ours.values()), _mean(base.values())
    return {"method": method, "modality": modality, "beats": bool(m > b), "mean": m, "baseline_mean": b,
            "organs": {o: [ours[o], base[o]] for o in ORGANS}}


def ranking(runs: dict[str, dict[str, dict]]) -> list[tuple[str, float, dict[str, float], float]]:
    """(method, criterion, per-scenario real Dice, phantom Dice) best first, over the methods finished in
    every criterion scenario that has runs. Real scans decide: criterion = mean over those scenarios of
    :func:`overall_dice` on the real scans (none of which any bench run trained on); the held-out
    phantoms' mean comes second and only breaks ties."""
    scenarios = [s for s in BEST_SCENARIOS if s in runs]
    methods = [m for m in METHOD_ORDER if scenarios and all(m in runs[s] for s in scenarios)]
    rows = []
    for m in methods:
        per = {s: overall_dice(runs[s][m], "real") for s in scenarios}
        phantom = _mean(overall_dice(runs[s][m], "phantom") for s in scenarios)
        rows.append((m, _mean(per.values()), per, phantom))

    def key(row: tuple) -> tuple[float, float]:
        return tuple(-v if not math.isnan(v) else math.inf for v in (round(row[1], 3), row[3]))

    return sorted(rows, key=key)


# ----------------------------------------------------------------------------- report


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _table(runs: dict[str, dict], kind: str, metric: str) -> list[str]:
    digits = 3 if metric == "dice" else 2
    head = ["method"] + [f"{o} {m}" for m in MODALITIES for o in ORGANS] + [f"mean {m}" for m in MODALITIES] + ["mean CT+MR"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for method in [m for m in METHOD_ORDER if m in runs]:
        run = runs[method]
        cells = [_f(organ_means(run, kind, m, metric)[o], digits) for m in MODALITIES for o in ORGANS]
        means = [modality_mean(run, kind, m, metric) for m in MODALITIES]
        cells += [_f(v, digits) for v in means] + [_f(_mean(means), digits)]
        lines.append("| " + " | ".join([f"`{method}`", *cells]) + " |")
    return lines


def claim_line(c: dict) -> str:
    organs = ", ".join(f"{o} {_f(a)} vs {_f(b)}" for o, (a, b) in c["organs"].items())
    verdict = "yes" if c["beats"] else "no"
    return (f"- `{c['method']}` beats `{BASELINE}` on {c['modality']} Dice: **{verdict}** "
            f"(mean {_f(c['mean'])} vs {_f(c['baseline_mean'])}; {organs})")


def box_plot(runs: dict[str, dict], scenario: str, path: Path) -> None:
    """Per modality, one box per method of the held-out phantoms' per-case per-organ Dice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHOD_ORDER if m in runs]
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.1 * len(methods) * 2), 4), sharey=True)
    for ax, modality in zip(axes, MODALITIES, strict=True):
        data = []
        for m in methods:
            cases = [c for c in runs[m]["results"].values() if c["kind"] == "phantom" and c["modality"] == modality]
            data.append([c["metrics"][o]["dice"] for c in cases for o in ORGANS if c["metrics"][o]["dice"] is not None])
        ax.boxplot(data, tick_labels=methods)
        ax.set_title(modality)
        ax.tick_params(axis="x", rotation=45)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("Dice per case and organ")
    fig.suptitle(f"{scenario}: held-out phantoms")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def ranking_markdown(rank: list, runs: dict) -> list[str]:
    """The criterion, the ranking table and the best-method line (also copied into the README)."""
    if not rank:
        return ["No criterion scenario has finished runs yet."]
    lines = [
        f"Criterion: real scans first. Mean over the scenarios {', '.join(f'`{s}`' for s in BEST_SCENARIOS if s in runs)} "
        "of the Dice on the real scans no run trained on",
        "(mean of the CT mean and the MR mean, each a mean over organs and scans), among methods finished in all of them;",
        "the held-out phantoms' mean (same form) is shown second and breaks ties only.",
        "",
        "| rank | method | criterion (real) | " + " | ".join(f"`{s}` real" for s in rank[0][2]) + " | phantoms |",
        "|---:|---|---:|" + "---:|" * len(rank[0][2]) + "---:|",
    ]
    for i, (m, crit, per, phantom) in enumerate(rank, 1):
        lines.append(f"| {i} | `{m}` | {_f(crit)} | " + " | ".join(_f(v) for v in per.values()) + f" | {_f(phantom)} |")
    top = [m for m, crit, _, _ in rank if _f(crit) == _f(rank[0][1])]
    if len(top) == 1:
        lines += ["", f"**Best method by this criterion: `{top[0]}`** (mean Dice {_f(rank[0][1])})."]
    else:
        lines += ["", f"**Best method by this criterion: `{top[0]}`**: {', '.join(f'`{m}`' for m in top)} tie on the real scans "
                  f"at {_f(rank[0][1])}; the held-out phantoms break the tie ({_f(rank[0][3])})."]
    return lines


README = REPO / "README.md"
README_BEGIN, README_END = "<!-- method-comparison:begin -->", "<!-- method-comparison:end -->"
SELECTION_MARKERS = ("<!-- method-selection:begin -->", "<!-- method-selection:end -->")


def update_readme(out: Path, readme: Path = README, markers: tuple[str, str] = (README_BEGIN, README_END)) -> bool:
    """Copy the report's ranking (between the README's ``markers``); True if changed."""
    doc = json.loads((out / "summary.json").read_text())
    runs = load_runs(out, steps=doc["bench"]["steps"])
    where = out.resolve().relative_to(REPO) if out.resolve().is_relative_to(REPO) else out
    body = [
        f"From `{where.as_posix()}/report.md` ({doc['runs_done']} of {doc['runs_expected']} runs finished, "
        f"{doc['bench']['steps']} steps each):",
        "",
        *ranking_markdown(ranking(runs), runs),
    ]
    return splice_readme(readme, markers, body)


def splice_readme(readme: Path, markers: tuple[str, str], body: list[str]) -> bool:
    """Replace the lines between ``markers`` in ``readme`` with ``body`` (atomically); True if it
    changed, False when unchanged or when the file lacks the markers."""
    begin, end = markers
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = head + begin + "\n" + "\n".join(body) + "\n" + end + tail
    if new != text:
        write_text_atomic(readme, new)
    return new != text


def _lr_lines(bench: Bench) -> list[str]:
    if bench.lr_by_method:
        other = ", ".join(f"`{m}` {lr:g}" for m, lr in bench.lr_by_method.items())
        return [f"  Learning rate: each method's own recipe under `training/configs/`: {bench.lr:g}, except {other}."]
    return [f"  One learning rate for all ({bench.lr:g}), whatever a method's own recipe under `training/configs/` uses:",
            "  a method tuned for another rate may be at a disadvantage here."]


def build_report(out: Path, bench: Bench, command: str, data_cpu_s: float = 0.0) -> str:
    """Write ``summary.json``, ``report.md`` and the box plots from the finished runs; return the report."""
    runs, failed = load_runs(out, steps=bench.steps), load_runs(out, failed=True, steps=bench.steps)
    scenarios = [s for s in bench.scenarios if s in runs]
    expected = len(bench.scenarios) * len(bench.methods)
    done = sum(len(runs[s]) for s in scenarios)
    everything = [r for group in (runs, failed) for s in group for r in group[s].values()]
    cpu = sum(r["train_cpu_s"] + r["eval_cpu_s"] for r in everything)
    claims = {
        s: [claim(runs[s], m, SCENARIOS[s].scarce) for m in METHOD_ORDER if m in runs[s] and m != BASELINE]
        for s in scenarios if SCENARIOS[s].scarce and BASELINE in runs[s]
    }
    rank = ranking(runs)
    scored = {n for group in runs.values() for r in group.values() for n, c in r["results"].items() if c["kind"] == "real"}
    real_names = ", ".join(n for n in (c[0] for c in REAL_CASES) if n in scored) or "none"
    L = [
        "# Method comparison: real scans first, phantoms second",
        "",
        f"Generated by `{command}` (`training/experiments/compare_methods.py`); every number below is computed",
        "from `summary.json` and `runs/<scenario>/<method>.json` next to this file. Do not edit by hand.",
        "",
        f"Runs finished: {done} of {expected} (scenario x method).",
        "",
        *[f"- Failed run `{s}` / `{m}`: {r['failed']}" for s in failed for m, r in failed[s].items()],
        "",
        "## Set-up, and what this does and does not show",
        "",
        f"- Training data: {bench.n_train} synthetic CT and {bench.n_train} synthetic MR phantoms (unpaired, seed {bench.train_seed}); "
        f"evaluation: {bench.n_test} held-out phantoms per modality (seed {bench.test_seed}) and the real scan(s) "
        f"{real_names}.",
        f"- Same for every method: {bench.steps} steps, batch {bench.batch_size} per modality, patch {bench.patch_size} at "
        f"{bench.spacing:g} mm, AdamW lr {bench.lr:g} with cosine schedule ({bench.warmup_steps} warm-up steps), seed {bench.seed}, "
        f"augmentation on, {bench.threads} CPU thread(s). Encoder widths {bench.features} for every network "
        "(`lssc`: its registry reference Transformer U-Net at these widths; `cmc`: its own network; `mulmodseg`: one-hot class codes).",
        *_lr_lines(bench),
        *[f"  Patch: `{m}` {p} (its network's constraint; {int(np.prod(p)):,} voxels against {int(np.prod(bench.patch_size)):,})."
          for m, p in bench.patch_by_method.items()],
        *[f"  Warm-up: `{m}` {w} steps (its recipe)." for m, w in bench.warmup_by_method.items()],
        *[f"  Pretraining: `{m}` first trains its network alone ({p['task']}, {p['steps']} extra steps at lr {p['lr']:g} on the run's own "
          "training data) as a stand-in for its paper's ImageNet-pretrained backbone." for m, p in bench.pretrain_by_method.items()],
        "- **Tiny networks and few steps**: these models are far from converged (small organs may not be learnt at all);",
        "  one seed was run, so differences of a few Dice points may be noise. **Phantoms are not patients.**",
        f"- Real scans ({real_names}): references are TotalSegmentator pseudo-labels (not manual), scored on the scans' own grids",
        "  through the ordinary `Segmenter`. No run of this bench trained on any of them (`chest_abdomen_ct_02` is the project's",
        "  validation scan: liver and spleen scored, its kidneys are cut off; the other two train the default model, not these runs).",
        "- Dice and ASSD (mm) per organ per modality: mean over cases; a label absent from prediction and reference is skipped,",
        "  a missed organ scores Dice 0 and no ASSD (`MultiModalSegLib/metrics.py`).",
        "",
        "Networks (exported parameters, counted from the bundles):",
        "",
        "| method | network | parameters |",
        "|---|---|---:|",
    ]
    for m in METHOD_ORDER:
        run = next((runs[s][m] for s in scenarios if m in runs[s]), None)
        if run:
            L.append(f"| `{m}` | {run['network']['name']} | {run['parameters']:,} |")
    L += ["", "## Best method", ""]
    L += [*ranking_markdown(rank, runs), ""]
    cells = [organ_means(r, "phantom", mod) for sc in scenarios for r in runs[sc].values() for mod in MODALITIES]
    if cells:
        learnt = ", ".join(f"{o} {sum(1 for c in cells if c[o] > 0.05)}" for o in ORGANS)
        L += [f"Organs learnt at all: of the {len(cells)} (scenario, method, modality) cells, those whose held-out mean Dice "
              f"exceeds 0.05 per organ: {learnt}. Where an organ is rarely learnt, the ranking mostly ranks the others.", ""]
    for s in scenarios:
        sc = SCENARIOS[s]
        L += [f"## Scenario `{s}`: {sc.description}", ""]
        cases = {k: v for r in runs[s].values() for k, v in r["cases"].items()}
        L += [f"Training cases per stream: {', '.join(f'{k} {v}' for k, v in cases.items())} "
              "(unlabelled streams reach only the methods that use them: `cmc`).", ""]
        if s in claims:
            L += [f"### Does joint training beat `{BASELINE}` on {sc.scarce}? (held-out phantoms, mean Dice over organs)", ""]
            L += [claim_line(c) for c in claims[s]] + [""]
        for kind, title in (("real", "real scans (pseudo-labels)"), ("phantom", "held-out phantoms")):
            L += [f"### Dice, {title}", "", *_table(runs[s], kind, "dice"), ""]
            L += [f"### ASSD (mm), {title}", "", *_table(runs[s], kind, "assd"), ""]
        plot = out / f"boxplot_{s}.png"
        box_plot(runs[s], s, plot)
        L += [f"![Dice per method, {s}]({plot.name})", ""]
    wall = sum(r["train_wall_s"] + r["eval_wall_s"] for r in everything)
    L += [
        "## Time",
        "",
        f"CPU time measured: {cpu:.0f} s for training and evaluation of the {done} runs (process CPU time, "
        f"{bench.threads} thread(s) a run), plus {data_cpu_s:.0f} s to generate the phantoms; the runs' wall time adds up to "
        f"{wall:.0f} s (several ran side by side on a shared 2-core machine).",
        "",
        "## Regenerate",
        "",
        "```bash",
        command,
        "```",
        "",
        "It resumes where a stopped bench stopped (finished runs are kept, a run in progress continues from its last",
        "checkpoint); `--report-only` rebuilds this report from the finished runs.",
        "",
    ]
    text = "\n".join(L)
    summary = {
        "bench": asdict(bench), "command": command, "runs_done": done, "runs_expected": expected,
        "cpu_s": round(cpu, 1), "data_cpu_s": round(data_cpu_s, 1),
        "claims": claims,
        "ranking": [{"method": m, "criterion": c, "per_scenario": p, "phantom": ph} for m, c, p, ph in rank],
        "dice_means": {
            s: {m: {k: {mod: organ_means(r, k, mod) for mod in MODALITIES} for k in ("phantom", "real")} for m, r in runs[s].items()}
            for s in scenarios
        },
        "runs": {s: runs[s] for s in scenarios},
        "failed": failed,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "summary.json", json.dumps(_clean(summary), indent=1) + "\n")
    write_text_atomic(out / "report.md", text)
    return text


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# ----------------------------------------------------------------------------- driver


def work_items(bench: Bench) -> list[tuple[str, str]]:
    return [(s, m) for s in bench.scenarios for m in bench.methods]


def relative_costs() -> dict[str, float]:
    """Method -> CPU seconds per step relative to ``joint``, from the training-speed benchmark's
    results when they exist (a scheduling hint only: 1.0 for every method otherwise)."""
    path = REPO / "benchmarks" / "results" / "training_speed.json"
    if not path.exists():
        return {}
    return {m["method"]: float(m["relative_cpu_to_joint"]) for m in json.loads(path.read_text()).get("methods", [])}


def split_items(items: list[tuple[str, str]], n: int) -> list[list[tuple[str, str]]]:
    """``items`` dealt to ``n`` workers, the dearest first to the least loaded (same on every worker)."""
    costs = relative_costs()
    shares: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for item in sorted(items, key=lambda it: -costs.get(it[1], 1.0)):
        k = loads.index(min(loads))
        shares[k].append(item)
        loads[k] += costs.get(item[1], 1.0)
    return shares


def _update_readme_for(out: Path) -> None:
    """The README block of the default results folders (none for another ``--out``)."""
    if out == RESULTS:
        update_readme(out)
    elif out == RESULTS_SELECTION:
        update_readme(out, markers=SELECTION_MARKERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks, 3 steps, 1 scenario, 2 methods (about a minute)")
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--work", type=Path, default=None, help=f"training folders (default {WORK.relative_to(REPO)})")
    parser.add_argument("--selection", action="store_true",
                        help="the longer balanced-scenario bench that picks the default model's method (results_selection/)")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side (each its own process)")
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)  # "k/n": items k, k+n, ...
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the finished runs")
    args = parser.parse_args(argv)
    if args.quick and args.selection:
        parser.error("--quick and --selection exclude each other")
    bench = QUICK if args.quick else SELECTION if args.selection else FULL
    out = args.out or (RESULTS_SELECTION if args.selection else RESULTS)
    work = args.work or (WORK / "quick" if args.quick else WORK / "selection" if args.selection else WORK)
    command = " ".join(["python training/experiments/compare_methods.py", *(argv if argv is not None else sys.argv[1:])])
    if args.worker or (not args.quick and args.out is None and (args.jobs == 2 or args.report_only)):
        # the runs of the default results folders come from this command
        command = COMMAND + (" --selection" if args.selection else "")
    work.mkdir(parents=True, exist_ok=True)
    train_json, test_json, data_cpu = prepare_data(bench, work)
    if args.report_only:
        print(build_report(out, bench, command, data_cpu))
        if not args.quick:
            _update_readme_for(out)
        return 0
    items = work_items(bench)
    if args.jobs > 1 and not args.worker:
        base = [sys.executable, str(Path(__file__).resolve())] + (["--quick"] if args.quick else [])
        base += ["--selection"] if args.selection else []
        base += ["--out", str(out), "--work", str(work)]
        procs = [subprocess.Popen([*base, "--worker", f"{k}/{args.jobs}"]) for k in range(args.jobs)]
        codes = [p.wait() for p in procs]
        build_report(out, bench, command, data_cpu)
        if not args.quick:
            _update_readme_for(out)
        return max(codes)
    if args.worker:
        k, n = (int(x) for x in args.worker.split("/"))
        items = split_items(items, n)[k]
    for scenario, method in items:
        if is_finished(out, scenario, method, bench.steps):
            continue
        t = time.time()
        run_one(bench, SCENARIOS[scenario], method, train_json, test_json, work, out)
        print(f"{scenario} {method}: {time.time() - t:.0f} s", flush=True)
        build_report(out, bench, command, data_cpu)
    build_report(out, bench, command, data_cpu)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
