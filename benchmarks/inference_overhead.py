"""The Segmenter's overhead over a bare MONAI sliding window, and its peak memory, per input size.

    python benchmarks/inference_overhead.py                 # 128^3, 256x256x128, 512x512x300; default model
    python benchmarks/inference_overhead.py --device cuda   # the same on a GPU
    python benchmarks/inference_overhead.py --quick --model BUNDLE   # a tiny run (used by the tests)

Inputs: the synthetic abdominal CT phantom of :mod:`peak_memory_segment` resampled onto each grid
(always the same 410 x 410 x 300 mm field of view, so a finer grid means smaller voxels: 128^3 is
3.2 x 3.2 x 2.34 mm, 512 x 512 x 300 is 0.8 x 0.8 x 1.0 mm), int16 HU, written to a NIfTI file.

Each size runs in its own child process (``--jobs`` of them side by side), which reads the file
into memory (not timed), then for each quality times, alternately, ``k`` times each:

* ``Segmenter.segment(volume, "auto")``: the whole pipeline from an in-memory volume (modality
  detection, intensity profile, reorientation and resampling, crop, sliding window, argmax,
  largest component, resampling back onto the input grid); writing the result is not included;
* the bare ``monai.inferers.sliding_window_inference`` of the same network on the tensor the
  Segmenter feeds it (``Segmenter.network_input``), with the same window, overlap, batch of
  windows, blending, devices and autocast.

Reported: the best (smallest) of the ``k`` wall times and of the ``k`` CPU times of each (CPU time:
every thread of the child; one network forward on one window warms up first), their ratios (the
pipeline's overhead), and the child's peak resident set size (``wait4``), which covers Python,
PyTorch, reading the file and every measurement of that size. On a shared machine the wall time
includes waiting for a core, so the CPU-time ratio is the one checked; both are printed. On CUDA
the timings synchronise the GPU, the wall-time ratio is checked, and the child's largest CUDA
allocation is reported too. Acceptance (CPU): overhead at most 1.3x for 256x256x128 (both
qualities) and peak RSS under 4 GB for 512x512x300; the exit status is 1 when a measured check
fails. Results: ``benchmarks/results/inference_overhead*``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory_segment import LIMIT_GB, REPO, make_ct, start_child, wait_child  # noqa: E402

from benchmarks.results_files import save_results  # noqa: E402

FULL_SIZES = [(128, 128, 128), (256, 256, 128), (512, 512, 300)]
QUICK_SIZES = [(48, 48, 32)]
QUALITIES = ["normal", "fast"]
OVERHEAD_LIMIT = 1.3
OVERHEAD_SIZE = (256, 256, 128)
MEMORY_SIZE = (512, 512, 300)
COMMAND = "python benchmarks/inference_overhead.py"


def _label(size) -> str:
    return "x".join(str(int(n)) for n in size)


# --------------------------------------------------------------------------- the child


def _timed(fn, sync) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of ``fn()``."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def child(image_path: str, model: str | None, device: str, qualities: list[str], repeats: int, threads: int = 0) -> dict:
    """Measure one input file in this process; returns the record the parent prints."""
    import SimpleITK as sitk
    import torch
    from monai.inferers import sliding_window_inference

    from MultiModalSegLib.device import autocast
    from MultiModalSegLib.inference import Segmenter
    from MultiModalSegLib.io import read_image

    if threads:
        torch.set_num_threads(threads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    volume = read_image(image_path)
    runs, resolved = [], device
    for quality in qualities:
        seg = Segmenter(model, device=device, quality=quality)
        resolved = str(seg.device)
        cuda = seg.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        name, _ = seg.resolve_modality(volume, "auto")
        _, _, image = seg.network_input(volume, name)

        def raw(seg=seg, image=image, name=name) -> None:
            window, overlap, mode, sw_batch_size = seg.sliding_window(tuple(image.shape[2:]))  # what segment() runs
            with torch.inference_mode(), autocast(seg.device, seg.amp):
                sliding_window_inference(
                    image,
                    roi_size=tuple(window),
                    sw_batch_size=sw_batch_size,
                    predictor=lambda x: seg.net(x, name),
                    overlap=overlap,
                    mode=mode,
                    sw_device=seg.device,
                    device=image.device,
                )

        def pipeline(seg=seg) -> None:
            seg.segment(volume, "auto")

        with torch.inference_mode(), autocast(seg.device, seg.amp):  # warm-up: one window
            seg.net(torch.zeros(1, 1, *seg.patch_size, device=seg.device), name)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seg_times, raw_times = [], []
        for r in range(repeats):  # alternate the order, so that a drift in machine load hits both
            pair = [(seg_times, pipeline), (raw_times, raw)]
            for times, fn in pair if r % 2 == 0 else pair[::-1]:
                times.append(_timed(fn, sync))
        seg_wall, seg_cpu = (list(t) for t in zip(*seg_times, strict=True))
        raw_wall, raw_cpu = (list(t) for t in zip(*raw_times, strict=True))
        runs.append(
            {
                "quality": quality,
                "model_spacing_mm": [float(s) for s in seg.spacing],
                "window_zyx": seg.window_for(image.shape[2:]),
                "network_input_zyx": list(image.shape[2:]),
                "segment_seconds": [round(t, 6) for t in seg_wall],
                "raw_seconds": [round(t, 6) for t in raw_wall],
                "segment_cpu_seconds": [round(t, 6) for t in seg_cpu],
                "raw_cpu_seconds": [round(t, 6) for t in raw_cpu],
                "segment_best_s": round(min(seg_wall), 6),
                "raw_best_s": round(min(raw_wall), 6),
                "segment_best_cpu_s": round(min(seg_cpu), 6),
                "raw_best_cpu_s": round(min(raw_cpu), 6),
                "overhead": round(min(seg_wall) / min(raw_wall), 4),
                "overhead_cpu": round(min(seg_cpu) / min(raw_cpu), 4),
                "cuda_max_allocated_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 3) if cuda else None,
            }
        )
        del seg, image
    return {
        "size_xyz": list(volume.size),
        "spacing_mm": [round(float(s), 4) for s in volume.spacing],
        "extent_mm": [round(n * float(s), 1) for n, s in zip(volume.size, volume.spacing, strict=True)],
        "device": resolved,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "runs": runs,
    }


# --------------------------------------------------------------------------- the parent


def _model_description(model: str | None) -> dict:
    from MultiModalSegLib.bundle import load_bundle
    from MultiModalSegLib.models import resolve_model

    path, sha = resolve_model(model)
    meta = load_bundle(path, expected_sha256=sha).metadata
    inference = meta.get("inference", {})
    return {
        "name": meta["name"],
        "version": meta["version"],
        "network": meta["network"]["name"],
        "spacing_mm": meta["spacing"],
        "patch_size_zyx": meta["patch_size"],
        "overlap": inference.get("overlap", 0.5),
        "sw_batch_size": inference.get("sw_batch_size", 2),
        "blending": inference.get("mode", "gaussian"),
    }


def markdown(record: dict) -> str:
    lines = [
        "| input (x y z) | spacing (mm) | quality | network input (z y x) | `Segmenter.segment` s (CPU s) | "
        "bare sliding window s (CPU s) | overhead, wall | overhead, CPU | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in record["sizes"]:
        for run in size["runs"]:
            lines.append(
                f"| {_label(size['size_xyz'])} | {' x '.join(f'{s:g}' for s in size['spacing_mm'])} | {run['quality']} | "
                f"{_label(run['network_input_zyx'])} | {run['segment_best_s']:.2f} ({run['segment_best_cpu_s']:.2f}) | "
                f"{run['raw_best_s']:.2f} ({run['raw_best_cpu_s']:.2f}) | {run['overhead']:.2f}x | {run['overhead_cpu']:.2f}x | "
                f"{size['peak_rss_gb']:.2f} |"
            )
    lines.append("")
    lines.append(
        f"Device {record['device']} ({record['machine']}, {record['torch_threads']} PyTorch threads); model "
        f"{record['model']['name']} {record['model']['version']} (patch {_label(record['model']['patch_size_zyx'])}, "
        f"overlap {record['model']['overlap']}, {record['model']['blending']} blending); best of "
        f"{record['repeats']} alternating runs each. Regenerate: `{record['command']}`."
    )
    for key, check in record["acceptance"].items():
        verdict = "not measured" if check["passed"] is None else ("pass" if check["passed"] else "FAIL")
        value = "-" if check["value"] is None else f"{check['value']:.2f}"
        lines.append(f"- {key}: {value} (limit {check['limit']}): {verdict}")
    return "\n".join(lines) + "\n"


def acceptance(sizes: list[dict], device: str) -> dict:
    """The two checks, evaluated where this run measured them (``passed`` is None elsewhere)."""
    by_size = {tuple(s["size_xyz"]): s for s in sizes}
    overhead = None
    if OVERHEAD_SIZE in by_size:  # CPU time on the CPU (a shared machine), wall time on a GPU
        key = "overhead_cpu" if device == "cpu" else "overhead"
        overhead = max(r[key] for r in by_size[OVERHEAD_SIZE]["runs"])
    memory = by_size[MEMORY_SIZE]["peak_rss_gb"] if MEMORY_SIZE in by_size else None
    return {
        f"overhead_{_label(OVERHEAD_SIZE)}_{device}": {
            "value": overhead, "limit": OVERHEAD_LIMIT, "passed": None if overhead is None else overhead <= OVERHEAD_LIMIT
        },
        f"peak_rss_gb_{_label(MEMORY_SIZE)}": {
            "value": memory, "limit": LIMIT_GB, "passed": None if memory is None else memory < LIMIT_GB
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Segmenter overhead over a bare MONAI sliding window, and peak memory")
    p.add_argument("--quick", action="store_true", help=f"one tiny size ({_label(QUICK_SIZES[0])}), one repeat")
    p.add_argument("--sizes", nargs="+", help="grids as XxYxZ (default: 128x128x128 256x256x128 512x512x300)")
    p.add_argument("--qualities", nargs="+", choices=QUALITIES, default=QUALITIES)
    p.add_argument("--repeats", type=int, help="timed runs of each (default 3, 1 with --quick); the best is kept")
    p.add_argument("--jobs", type=int, default=1, help="sizes measured side by side (default 1)")
    p.add_argument("--model", help="bundle path or manifest name (default: the default model)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="PyTorch and SimpleITK threads (0: their defaults)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.child:
        print(json.dumps(child(args.child, args.model, args.device, args.qualities, repeats, args.threads)))
        return 0

    from MultiModalSegLib.device import resolve_device

    device = resolve_device(args.device).type
    sizes = [tuple(int(n) for n in s.lower().split("x")) for s in args.sizes] if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    measured, running = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, size in enumerate(sizes):
            path = Path(tmp) / f"ct_{_label(size)}.nii.gz"
            make_ct(path, size)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--device", device, "--repeats", str(repeats), "--threads", str(args.threads)]
            cmd += ["--qualities", *args.qualities] + (["--model", args.model] if args.model else [])
            running.append((size, start_child(cmd)))
            if len(running) < max(args.jobs, 1) and i + 1 < len(sizes):
                continue
            for size, started in running:
                stdout, wall, peak_gb = wait_child(started)
                record = json.loads(stdout.strip().splitlines()[-1])
                record.update(peak_rss_gb=round(peak_gb, 3), child_wall_s=round(wall, 1))
                measured.append(record)
                print(
                    f"{_label(size)}: "
                    + ", ".join(f"{r['quality']} {r['overhead']:.2f}x wall, {r['overhead_cpu']:.2f}x CPU" for r in record["runs"])
                    + f", peak RSS {peak_gb:.2f} GB",
                    flush=True,
                )
            running = []
    record = {
        "benchmark": "inference_overhead",
        "command": COMMAND + (" --quick" if args.quick else "") + (f" --device {args.device}" if args.device != "auto" else "")
        + (f" --threads {args.threads}" if args.threads else "")
        + (f" --jobs {args.jobs}" if args.jobs > 1 else ""),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "device": device,
        "gpu": measured[0]["gpu"] if measured else None,
        "torch_threads": measured[0]["torch_threads"] if measured else None,
        "model": _model_description(args.model),
        "input": "synthetic CT phantom (int16 HU, 410 x 410 x 300 mm field of view) read from NIfTI into memory before timing",
        "timing": "best of `repeats` runs of each (wall and CPU time), alternating their order; one window forward warms up first",
        "repeats": repeats,
        "sizes": measured,
    }
    record["acceptance"] = acceptance(measured, device)
    record["passed"] = all(c["passed"] is not False for c in record["acceptance"].values())
    stem = "inference_overhead" + ("_quick" if args.quick else "") + ("" if device == "cpu" else f"_{device}")
    md = markdown(record)
    save_results(args.results, stem, record, md)
    print(md)
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
