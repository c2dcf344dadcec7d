"""Start-up of ``mmseg`` and of the inference package, measured side by side with a baseline revision.

    python benchmarks/startup.py                          # against BASELINE, 5 alternating runs each
    python benchmarks/startup.py --baseline HEAD~3 --repeats 3
    python benchmarks/startup.py --quick --baseline HEAD  # one run each
    python benchmarks/startup.py --quick --baseline HEAD --measures skip_existing  # (the test) plus 1 and 2

The baseline's ``MultiModalSegLib/`` and ``Resources/`` are extracted with ``git archive`` into a
temporary folder. Every measurement runs a fresh Python with ``PYTHONPATH`` set to that folder or
to this checkout, the two alternating, so both see the same machine load. Measured, for each:

1. ``mmseg segment missing.nii.gz -o x`` (run as ``python -m MultiModalSegLib``): wall time until
   the error. Acceptance: under 1.5 s.
2. ``python -X importtime -c "import MultiModalSegLib.inference"``: wall time, the package's
   cumulative import time as ``-X importtime`` reports it, and which of ``MultiModalSegLib.losses``,
   ``MultiModalSegLib.methods``, ``MultiModalSegLib.training`` and ``monai.losses`` it imports.
   Acceptance: none of them.
3. ``mmseg segment`` of the shipped CT sample into a folder that already holds its result: wall
   time until it has skipped it (the baseline loads the model first).
4. Loading the default model (``Segmenter(device="cpu")``, import included): wall time, and which of
   the modules above are then imported. MONAI's own ``__init__`` imports every MONAI subpackage,
   ``monai.losses`` among them, so any use of MONAI (the networks' blocks, the sliding window)
   imports it; what the library keeps out is its own training code.
5. The same in an ``mmseg`` process: :func:`MultiModalSegLib.monai_start.install` first, as the command
   does (a revision without it loads the model as in 4), and which optional packages MONAI then loaded.

Reported: every time, the median and the best of each, the ratio of the baseline's median to this
checkout's, and the load average before and after (a shared machine makes every time longer, the
baseline's and this checkout's alike). ``--measures`` picks some of them; 1 and 2, which the acceptance
reads, are always measured. Results: ``benchmarks/results/startup*``; the exit status is 1
when an acceptance check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.results_files import save_results  # noqa: E402
from MultiModalSegLib.monai_start import SKIPPED  # noqa: E402

BASELINE = "feb4bfe"  # the library before arguments were checked ahead of the heavy imports
SAMPLE = REPO / "Resources" / "SampleData" / "abdomen_ct_01" / "image.nii.gz"
LIMIT_S = 1.5
WATCHED = ("MultiModalSegLib.losses", "MultiModalSegLib.methods", "MultiModalSegLib.training", "monai.losses")
LOAD_MODEL = (
    "import json, sys\n"
    "from MultiModalSegLib.inference import Segmenter\n"
    "Segmenter(device='cpu')\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)

LOAD_MODEL_AS_MMSEG = (
    "try:\n"
    "    from MultiModalSegLib import monai_start\n"
    "    monai_start.install()\n"
    "except ImportError:\n"
    "    pass\n" + LOAD_MODEL
)


def short_revision(revision: str) -> str:
    """``revision`` (``HEAD~1``, a branch, a hash) as the short hash it names now, for the record."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True, text=True,
                          check=True).stdout.strip()


def extract(revision: str, into: Path) -> Path:
    """``MultiModalSegLib/`` and ``Resources/`` of ``revision`` under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "MultiModalSegLib", "Resources"],
        capture_output=True, check=True,
    )  # fmt: skip
    into.mkdir(parents=True, exist_ok=True)
    tar_path = into / "baseline.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    tar_path.unlink()
    return into


def timed(root: Path, args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of ``python ARGS`` with ``root`` first on the path (and its Resources)."""
    env = {**os.environ, "PYTHONPATH": str(root), "MMSEG_RESOURCES": str(root / "Resources")}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, run


def watched(names: list[str], packages: tuple[str, ...] = WATCHED) -> list[str]:
    """Which of ``packages`` (each with its submodules) are among the module ``names``."""
    return [w for w in packages if any(n == w or n.startswith(w + ".") for n in names)]


def missing_file(root: Path, work: Path) -> dict:
    seconds, run = timed(root, ["-m", "MultiModalSegLib", "segment", "missing.nii.gz", "-o", "x"], work)
    assert run.returncode == 1 and "missing.nii.gz" in run.stderr, run.stderr
    return {"seconds": seconds, "message": run.stderr.strip().splitlines()[-1]}


def import_inference(root: Path, work: Path) -> dict:
    seconds, run = timed(root, ["-X", "importtime", "-c", "import MultiModalSegLib.inference"], work)
    assert run.returncode == 0, run.stderr
    rows = [line.split("|") for line in run.stderr.splitlines() if line.startswith("import time:") and "|" in line]
    names = [r[2].strip() for r in rows if len(r) == 3]
    cumulative = next(int(r[1]) for r in rows if len(r) == 3 and r[2].strip() == "MultiModalSegLib.inference")
    return {"seconds": seconds, "importtime_s": cumulative / 1e6, "modules": len(names), "imports": watched(names)}


def skip_existing(root: Path, work: Path) -> dict:
    out = work / f"done-{root.name}"
    out.mkdir(exist_ok=True)
    (out / "image.seg.nrrd").write_bytes(b"an earlier result")
    seconds, run = timed(root, ["-m", "MultiModalSegLib", "segment", str(SAMPLE), "-o", str(out)], work)
    assert run.returncode == 0 and "skipped" in run.stdout, run.stderr
    return {"seconds": seconds, "loaded_model": "model:" in run.stderr}


def load_model(root: Path, work: Path) -> dict:
    seconds, run = timed(root, ["-c", LOAD_MODEL], work)
    assert run.returncode == 0, run.stderr
    return {"seconds": seconds, "imports": watched(json.loads(run.stdout.splitlines()[-1]))}


def load_model_as_mmseg(root: Path, work: Path) -> dict:
    seconds, run = timed(root, ["-c", LOAD_MODEL_AS_MMSEG], work)
    assert run.returncode == 0, run.stderr
    return {"seconds": seconds, "optional": watched(json.loads(run.stdout.splitlines()[-1]), SKIPPED)}


MEASURES = {
    "missing_file": ("`mmseg segment missing.nii.gz -o x`", missing_file),
    "import_inference": ("`import MultiModalSegLib.inference`", import_inference),
    "skip_existing": ("`mmseg segment` of a finished case (skipped)", skip_existing),
    "load_model": ("import + load the default model", load_model),
    "load_model_as_mmseg": ("the same in an `mmseg` process", load_model_as_mmseg),
}


ACCEPTANCE_MEASURES = ("missing_file", "import_inference")


def measure(roots: dict[str, Path], repeats: int, work: Path, measures: tuple[str, ...] = tuple(MEASURES)) -> dict:
    """Each of ``measures`` ``repeats`` times for each root, the roots alternating (baseline first, then second)."""
    runs: dict[str, dict[str, list[dict]]] = {m: {name: [] for name in roots} for m in MEASURES if m in measures}
    for i in range(repeats):
        order = list(roots) if i % 2 == 0 else list(roots)[::-1]
        for key in runs:
            for name in order:
                runs[key][name].append(MEASURES[key][1](roots[name], work))
    return runs


def summarise(runs: dict) -> dict:
    out = {}
    for key, per_root in runs.items():
        row = {}
        for name, results in per_root.items():
            seconds = [r["seconds"] for r in results]
            row[name] = {"seconds": seconds, "median_s": statistics.median(seconds), "best_s": min(seconds),
                         **{k: v for k, v in results[-1].items() if k != "seconds"}}  # fmt: skip
        row["ratio_median"] = row["baseline"]["median_s"] / row["current"]["median_s"]
        out[key] = row
    return out


def markdown(summary: dict, record: dict) -> str:
    lines = [
        "| measure | baseline median s (best) | this checkout median s (best) | baseline / this | imported by this checkout (watched) |",
        "|---|---|---|---|---|",
    ]
    for key, row in summary.items():
        label = MEASURES[key][0]
        b, c = row["baseline"], row["current"]
        imports = ", ".join(f"`{m}`" for m in c.get("imports", [])) or ("none" if "imports" in c else "-")
        if key == "skip_existing":
            imports = f"model loaded: baseline {'yes' if b['loaded_model'] else 'no'}, this {'yes' if c['loaded_model'] else 'no'}"
        if key == "load_model_as_mmseg":
            imports = (f"optional packages MONAI loaded: baseline {', '.join(f'`{m}`' for m in b['optional']) or 'none'}; "
                       f"this {', '.join(f'`{m}`' for m in c['optional']) or 'none'}")
        lines.append(
            f"| {label} | {b['median_s']:.2f} ({b['best_s']:.2f}) | {c['median_s']:.2f} ({c['best_s']:.2f}) "
            f"| {row['ratio_median']:.1f}x | {imports} |"
        )
    inf = summary["import_inference"]
    lines += [
        "",
        f"`-X importtime` of `MultiModalSegLib.inference`: baseline {inf['baseline']['importtime_s']:.2f} s over "
        f"{inf['baseline']['modules']} modules, importing {', '.join(f'`{m}`' for m in inf['baseline']['imports']) or 'none of the watched'}; "
        f"this checkout {inf['current']['importtime_s']:.2f} s over {inf['current']['modules']} modules, importing "
        f"{', '.join(f'`{m}`' for m in inf['current']['imports']) or 'none of the watched'}.",
        "",
        f"Baseline `{record['baseline']}` against this checkout; {record['repeats']} alternating runs each on "
        f"{record['machine']} ({record['cpus']} CPU cores, Python {record['python']}). Load average before "
        f"{record['load_before']:.1f}, after {record['load_after']:.1f}"
        + (": the machine was shared with other work, so every time is longer than on an idle machine (the "
           "baseline's and this checkout's alike)." if max(record["load_before"], record["load_after"]) > 0.5 * record["cpus"] else ".")
        + " Regenerate: `python benchmarks/startup.py`.",
        "",
    ]  # fmt: skip
    lines += [f"- {name}: {check['value']} (limit {check['limit']}): {'pass' if check['passed'] else 'FAIL'}"
              for name, check in record["acceptance"].items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help=f"git revision to compare with (default {BASELINE})")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each measure for each side (default 5)")
    parser.add_argument("--quick", action="store_true", help="one run each (default: off)")
    parser.add_argument("--measures", nargs="+", choices=list(MEASURES), default=list(MEASURES),
                        help=f"which measures (default: all; {' and '.join(ACCEPTANCE_MEASURES)} always, the acceptance reads them)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results",
                        help="folder for startup.json/.md (default: benchmarks/results)")  # fmt: skip
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mmseg-startup-") as tmp:
        tmp_path = Path(tmp)
        baseline = extract(args.baseline, tmp_path / "baseline")
        work = tmp_path / "work"
        work.mkdir()
        measures = tuple(dict.fromkeys([*ACCEPTANCE_MEASURES, *args.measures]))
        runs = measure({"baseline": baseline, "current": REPO}, repeats, work, measures)
    summary = summarise(runs)
    missing = summary["missing_file"]["current"]["median_s"]
    imports = summary["import_inference"]["current"]["imports"]
    record = {
        "baseline": short_revision(args.baseline), "repeats": repeats, "cpus": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(), "load_before": load_before, "load_after": os.getloadavg()[0],
        "measures": summary,
        "acceptance": {
            "missing_file_median_s": {"value": round(missing, 3), "limit": LIMIT_S, "passed": missing < LIMIT_S},
            "watched_imports_of_inference": {"value": imports, "limit": [], "passed": not imports},
        },
    }  # fmt: skip
    md = markdown(summary, record)
    stem = "startup_quick" if args.quick else "startup"
    save_results(args.results, stem, record, md)
    print(md, end="")
    return 0 if all(check["passed"] for check in record["acceptance"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
