"""Peak memory (RSS) and wall time of `mmseg segment` on a large CT, measured in a child process.

    python benchmarks/peak_memory_segment.py                    # 512 x 512 x 300, the default model
    python benchmarks/peak_memory_segment.py --size 256 256 128 --model PATH

The input is a synthetic abdominal CT phantom resampled onto a 512 x 512 x 300 grid (0.8 x 0.8 x
1.0 mm, int16 HU), written to a temporary folder. The whole command runs in a child process, whose
peak resident set size the kernel reports (``ru_maxrss`` from ``wait4``), so Python,
PyTorch and MONAI start-up are included. Results go to ``benchmarks/results/`` as JSON and markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_files import save_results  # noqa: E402

LIMIT_GB = 4.0


def make_ct(path: Path, size: tuple[int, int, int]) -> None:
    """A phantom CT resampled onto a grid of ``size`` (x, y, z) voxels spanning 410 x 410 x 300 mm."""
    import numpy as np
    import SimpleITK as sitk

    from MultiModalSegLib.data.phantoms import generate_phantom

    image, _ = generate_phantom("CT", 7)
    src = image.to_sitk()
    spacing = (410.0 / size[0], 410.0 / size[1], 300.0 / size[2])
    center = np.asarray(src.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in src.GetSize()]))
    ref = sitk.Image(list(size), sitk.sitkInt16)
    ref.SetSpacing(spacing)
    ref.SetOrigin(tuple(center - (np.asarray(size) - 1) * np.asarray(spacing) / 2))
    out = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, -1000, sitk.sitkInt16)
    sitk.WriteImage(out, str(path), True)


def start_child(cmd: list[str]) -> tuple:
    """Start ``cmd`` with the repository on ``PYTHONPATH``, its output going to temporary files."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True), out, err, time.perf_counter(), cmd


def wait_child(started: tuple) -> tuple[str, float, float]:
    """Wait for a child of :func:`start_child`; return its stdout, wall seconds and peak RSS (GB).

    The peak is that child's own ``ru_maxrss`` (from ``wait4`` on its pid), so a script may run several
    children, one after the other or side by side, and get each one's figure. A failing child ends
    the benchmark.
    """
    proc, out, err, t0, cmd = started
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    with out, err:
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}):\n{stderr}")
    return stdout, wall, usage.ru_maxrss / 1024**2  # Linux reports kilobytes


def run_child(cmd: list[str]) -> tuple[str, float, float]:
    """Run ``cmd`` in a child process; see :func:`wait_child`."""
    return wait_child(start_child(cmd))


def measure(image: Path, out_dir: Path, model: str | None, device: str) -> dict:
    cmd = [sys.executable, "-m", "MultiModalSegLib", "segment", str(image), "-o", str(out_dir), "--device", device, "--overwrite"]
    if model:
        cmd += ["--model", model]
    stdout, wall, peak_gb = run_child(cmd)
    return {"peak_rss_gb": round(peak_gb, 3), "wall_seconds": round(wall, 2), "output": stdout.strip()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="peak memory of mmseg segment on a large CT")
    p.add_argument("--size", nargs=3, type=int, default=[512, 512, 300], metavar=("X", "Y", "Z"))
    p.add_argument("--model", help="bundle path or manifest name (default: the default model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    size = tuple(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "ct.nii.gz"
        make_ct(image, size)
        result = measure(image, Path(tmp) / "out", args.model, args.device)
    label = "x".join(map(str, size))
    record = {
        "input": f"synthetic CT {label} int16",
        "device": args.device,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "limit_gb": LIMIT_GB,
        "within_limit": result["peak_rss_gb"] < LIMIT_GB,
        **result,
    }
    md = (
        f"| input | device | peak RSS (GB) | limit (GB) | wall (s) |\n|---|---|---|---|---|\n"
        f"| {record['input']} | {args.device} | {record['peak_rss_gb']:.2f} | {LIMIT_GB} | {record['wall_seconds']:.1f} |\n"
    )
    save_results(args.results, f"peak_memory_segment_{label}", record, md)
    print(md)
    print(f"peak RSS {record['peak_rss_gb']:.2f} GB {'<' if record['within_limit'] else '>='} {LIMIT_GB} GB")
    return 0 if record["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
