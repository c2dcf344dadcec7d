"""``mmseg models list | download | verify | remove | import | export | show | combine | trust``: the model zoo.

Trust: a model named from the manifest is checked against the manifest's sha256. A bundle given by
path is *verified* when its sha256 is the manifest's, *trusted* when it is in the user's trusted list
(``mmseg models trust PATH``; ``$MMSEG_TRUSTED_MODELS``, else ``~/.config/multimodalseg/trusted_models.txt``),
and otherwise loaded with an "unverified" warning; an altered copy of a manifest model is refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import time
from typing import TYPE_CHECKING

from .options import OUTPUT_FLAGS

if TYPE_CHECKING:
    from ..download import ProgressCallback


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--manifest", help="models manifest JSON (default: $MMSEG_MODELS_MANIFEST, else Resources/Models.json)"
    )
    common.add_argument(
        "--cache", help="download cache folder (default: $MMSEG_MODELS_CACHE, else ~/.cache/multimodalseg/models)"
    )
    return common


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    common = _common()
    parser = sub.add_parser(
        "models",
        help="list, download, verify, import and export models",
        description="The models of the models manifest: installed ones and ones downloaded on first use. "
        "Trust: a manifest name is checked against the manifest's sha256; a bundle given by path is verified when "
        "its sha256 is the manifest's, trusted when it is in your trusted list (`mmseg models trust PATH`), "
        "otherwise used with an 'unverified' warning; an altered copy of a manifest model is refused.",
    )
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")

    def action(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help, description=description)

    p = action("list", "every model with its state",
               "List every model of the manifest: name, version, state (installed, downloadable, update available, "
               "missing), size and description; * marks the default model.")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run_list)
    p = action("download", "download a model (or its update) into the cache",
               "Download a model of the manifest (or its update) into the cache; the file is installed only once "
               "its sha256 matches the manifest's, and an interrupted download resumes.")  # fmt: skip
    p.add_argument("name", help="model name from the manifest")
    p.add_argument("--progress", action="store_true",
                   help="stdout carries JSON lines only: progress records, then {\"name\": ..., \"path\": ...} "
                   "(default: a progress bar on stderr)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for the server (default 30)")
    p.set_defaults(func=run_download)
    p = action("verify", "check the sha256 of installed models",
               "Recompute the sha256 of installed models and compare it with the manifest's; exit 1 on a mismatch.")  # fmt: skip
    p.add_argument("name", nargs="?", help="one model (default: every installed one)")
    p.set_defaults(func=run_verify)
    p = action("remove", "delete a downloaded model from the cache",
               "Delete a downloaded model from the cache (models shipped with the package stay).")  # fmt: skip
    p.add_argument("name", help="model name from the manifest")
    p.set_defaults(func=run_remove)
    p = action("import", "install a bundle file copied by hand (offline)",
               "Install a bundle file copied by hand (no network needed); its sha256 must be a manifest model's.")  # fmt: skip
    p.add_argument("file", help="the bundle file (.zip)")
    p.set_defaults(func=run_import)
    p = action("export", "copy an installed model's bundle file out",
               "Copy an installed model's bundle file out, e.g. to carry it to an offline computer "
               "(install it there with `mmseg models import FILE`).")  # fmt: skip
    p.add_argument("name", help="model name from the manifest")
    p.add_argument("file", help="destination file or folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination file")
    p.set_defaults(func=run_export)
    p = action("show", "print a model's card (markdown)",
               "Print a model's card (markdown): modalities, labels, training data, metrics, intended use, licence.")  # fmt: skip
    p.add_argument("name", help="model name, or a bundle path (its sha256 says whether it is the manifest's model)")
    p.set_defaults(func=run_show)
    p = action("combine", "make one ensemble bundle of two or more models (their probabilities averaged)",
               "Combine two or more models of one architecture (manifest names or bundle paths, each opened and verified "
               "as for segmenting) into one ensemble bundle: every window runs through every network and their class "
               "probabilities are averaged. The members must share method, network, labels, voxel size, patch size, "
               "intensity profiles and inference settings. Fine-tuning the ensemble trains every member.")  # fmt: skip
    p.add_argument("members", nargs="+", help="the models, in order: manifest names or bundle paths (two or more)")
    p.add_argument(*OUTPUT_FLAGS, dest="out", metavar="BUNDLE", required=True,
                   help="the ensemble bundle to write: a .zip file or a folder (--out is an alias)")  # fmt: skip
    p.add_argument("--name", required=True, help="the ensemble's model name (not one of the models manifest's)")
    p.add_argument("--version", dest="model_version", metavar="X.Y.Z", required=True, help="the ensemble's version")
    p.add_argument("--description", help="the ensemble's description (default: a sentence naming its members)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --output")
    p.set_defaults(func=run_combine)
    p = actions.add_parser(
        "trust", parents=[common], help="add a bundle's sha256 to your trusted list (no 'unverified' warning for it)",
        description="Add the sha256 of a bundle given by path to your trusted list "
        "($MMSEG_TRUSTED_MODELS, else ~/.config/multimodalseg/trusted_models.txt). Only do this for a bundle "
        "whose origin you know: a trusted bundle is loaded by path without a warning.",
    )  # fmt: skip
    p.add_argument("path", help="bundle file or folder")
    p.add_argument("--list", dest="trusted_list", help="the trusted list file (default: $MMSEG_TRUSTED_MODELS, else ~/.config/multimodalseg/trusted_models.txt)")
    p.set_defaults(func=run_trust)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    return parser


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def progress_bar(stream=None, width: int = 30) -> ProgressCallback:
    """A text progress bar for a terminal (on stderr), redrawn at most 10 times a second."""
    stream = stream or sys.stderr
    last = [0.0]

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        final = total is not None and done >= total
        if now - last[0] < 0.1 and not final:
            return
        last[0] = now
        if total:
            filled = int(width * done / total)
            text = f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * done / total:5.1f}% {_mb(done)} / {_mb(total)}"
        else:
            text = f"\r{_mb(done)}"
        stream.write(text + ("\n" if final else ""))
        stream.flush()

    return show


def json_progress(stream=None) -> ProgressCallback:
    """JSON lines ``{"done": bytes, "total": bytes, "fraction": f}`` on stdout (for the Slicer module)."""
    stream = stream or sys.stdout
    last = [0.0]

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and not (total is not None and done >= total):
            return
        last[0] = now
        fraction = round(done / total, 4) if total else None
        stream.write(json.dumps({"done": done, "total": total, "fraction": fraction}) + "\n")
        stream.flush()

    return show


def run_list(args: argparse.Namespace) -> int:
    from ..model_zoo import list_models

    models = list_models(args.manifest, args.cache)
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    if not models:
        print("No models in the manifest.")
        return 0
    rows = [("NAME", "VERSION", "STATE", "SIZE", "DESCRIPTION")]
    for m in models:
        state = m.state + (f" (have {m.installed_version})" if m.state == "update available" else "")
        name = m.name + (" *" if m.default else "")
        rows.append((name, m.version, state, _mb(m.size) if m.size else "", m.description))
    print(format_table(rows, shutil.get_terminal_size().columns))
    print("* default model")
    return 0


def format_table(rows: list[tuple[str, ...]], width: int = 100, min_last: int = 30) -> str:
    """Columns padded to their widest cell; the last column is wrapped at word boundaries to fit
    ``width`` characters (never narrower than ``min_last``), its continuation lines aligned under it."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    indent = sum(widths) + 2 * len(widths)
    last = max(width - indent, min_last)
    lines = []
    for r in rows:
        head = "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  "
        wrapped = textwrap.wrap(r[-1], last, break_long_words=False, break_on_hyphens=False) or [""]
        lines.append((head + wrapped[0]).rstrip())
        lines += [" " * indent + part for part in wrapped[1:]]
    return "\n".join(lines)


def run_download(args: argparse.Namespace) -> int:
    from ..model_zoo import download_model

    progress = json_progress() if args.progress else progress_bar()
    path = download_model(args.name, args.manifest, args.cache, progress=progress, timeout=args.timeout)
    print(json.dumps({"name": args.name, "path": str(path)}) if args.progress else f"{args.name}: {path}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from ..model_zoo import verify_models

    results = verify_models(args.name, args.manifest, args.cache)
    bad = 0
    for r in results:
        status = {True: "OK", False: "FAILED", None: "-"}[r.ok]
        print(f"{r.name}: {status} {r.message}" + (f" ({r.path})" if r.path else ""))
        bad += r.ok is False
    if args.name and results and results[0].ok is None:
        return 1
    return 1 if bad else 0


def run_remove(args: argparse.Namespace) -> int:
    from ..model_zoo import remove_model

    removed = remove_model(args.name, args.manifest, args.cache)
    if not removed:
        print(f"{args.name}: nothing to remove (not downloaded)")
    for path in removed:
        print(f"removed {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..model_zoo import import_model

    entry, path = import_model(args.file, args.manifest, args.cache)
    print(f"{entry.name} {entry.version}: sha256 verified, installed as {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..model_zoo import export_model

    path = export_model(args.name, args.file, args.manifest, args.cache, overwrite=args.overwrite)
    print(f"{args.name}: written to {path} (install it elsewhere with `mmseg models import {path.name}`)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..model_card import model_card

    sys.stdout.write(model_card(args.name, args.manifest, args.cache))
    return 0


def run_trust(args: argparse.Namespace) -> int:
    from ..trust import trust_bundle

    sha, listed = trust_bundle(args.path, args.trusted_list)
    print(f"{args.path}: sha256 {sha} is trusted (listed in {listed})")
    return 0


def run_combine(args: argparse.Namespace) -> int:
    from ..bundle_members import member_names, write_ensemble
    from ..naming import check_new_model_name
    from ..trust import UNVERIFIED, load_model

    check_new_model_name(args.name, "--name", args.manifest)
    members = []
    for model in args.members:
        bundle, provenance = load_model(model, args.manifest, cache_dir=args.cache)
        if provenance.status == UNVERIFIED:
            print(f"mmseg models combine: warning: {provenance.message}.", file=sys.stderr)
        members.append(bundle)
    out = write_ensemble(members, args.out, name=args.name, version=args.model_version, description=args.description,
                         overwrite=args.overwrite)
    print(f"{out}: {args.name} {args.model_version}, an ensemble of {member_names(members)}")
    return 0
