"""Rewrite the training provenance of bundles made before provenance named data by sha256.

    python training/scrub_provenance.py            # the shipped bundles and the test fixture
    python training/scrub_provenance.py --check    # exit 1 if any of them still records a path

Those bundles recorded their data sets as paths of the machine they were built on
(``/work/main/Resources/SampleData/dataset.json``) or of the working folder
(``training/runs/abdomen-ummkd/phantoms/dataset.json``), and the same for the warm-start bundle
and the recipe file. Each is rewritten as :mod:`MultiModalSegLib.provenance` records it today:

- a data set of the repository: its ``dataset.json``'s name and sha256, and the cases trained on
  and scored. The file must not have changed since the bundle's training date (checked with git);
- the phantoms the run generated: the generator settings from the recorded config and the sha256
  of the ``dataset.json`` those settings write (:func:`~MultiModalSegLib.data.phantoms.phantom_dataset_document`);
- the warm-start bundle and the recipe: their file names (the warm start keeps the sha256 it was
  loaded with, plus the sha256 of its weights, which a rewrite of its metadata does not change).

Only ``metadata.json`` changes (:func:`~MultiModalSegLib.bundle.replace_metadata`): the weights and
the other members keep their bytes, a zip keeps its members' order and timestamps. The bundle
records ``training.provenance_rewritten`` with its sha256 before. Then the models manifest's sha256
and size and any recipe whose ``init`` named an old sha256 are updated. A bundle without a path in
its provenance is left as it is, so a second run changes nothing.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import subprocess
import sys
from pathlib import Path, PurePath

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from MultiModalSegLib.bundle import bundle_sha256, replace_metadata  # noqa: E402
from MultiModalSegLib.data.phantoms import phantom_dataset_document  # noqa: E402
from MultiModalSegLib.models import read_bundle_metadata  # noqa: E402
from MultiModalSegLib.provenance import (  # noqa: E402
    config_record,
    dataset_file_record,
    dataset_record,
    path_like_strings,
    provenance_sections,
)

DEFAULT_BUNDLES = [*sorted((REPO / "Resources" / "Models").glob("*.zip")),
                   REPO / "Testing" / "library" / "training" / "data" / "tiny-ctmr-ummkd"]  # fmt: skip
MANIFEST = REPO / "Resources" / "Models.json"
CONFIGS = REPO / "training" / "configs"
ANCHORS = ("Resources", "training")  # repository folders a recorded absolute path is matched below


def repository_file(recorded: str) -> Path:
    """The repository file a recorded path named (matched from its ``Resources`` or ``training`` part)."""
    parts = PurePath(recorded).parts
    for anchor in ANCHORS:
        if anchor in parts:
            candidate = REPO.joinpath(*parts[parts.index(anchor):])
            if candidate.is_file():
                return candidate
    raise SystemExit(f"{recorded}: no such file in this repository; this bundle's data set cannot be identified.")


def check_unchanged_since(path: Path, date: str) -> None:
    """Refuse a file that git says was changed after ``date`` (then its sha256 is not the trained one's)."""
    rel = path.relative_to(REPO).as_posix()
    out = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%cI", "--", rel], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"{rel}: git has no history for it; cannot check that it is the file the bundle trained on.")
    changed = datetime.datetime.fromisoformat(out.stdout.strip())
    if changed > datetime.datetime.fromisoformat(date):
        raise SystemExit(f"{rel} was changed on {changed} after the bundle was trained ({date}); its sha256 is not the trained one's.")


def phantom_record(config: dict, modalities: list[str]) -> dict:
    """The record of the phantoms a run generated, from its config's ``phantoms`` settings."""
    ph = config["phantoms"]
    recipe = {k: int(ph.get(k, 0)) for k in ("ct", "mr", "validation", "seed")}
    document = phantom_dataset_document(recipe["ct"], recipe["mr"], recipe["seed"], recipe["validation"])
    sha = hashlib.sha256((json.dumps(document, indent=2) + "\n").encode("utf-8")).hexdigest()
    return dataset_record(document, sha, origin="phantom", modalities=modalities, phantoms=recipe)


def scrub(metadata: dict, bundle_sha: str, folder: Path) -> dict:
    """``metadata`` with its training provenance as names and sha256 (see the module doc)."""
    meta = copy.deepcopy(metadata)
    training = meta["training"]
    config = training.get("config") or {}
    modalities = list(meta["modalities"])
    entries = [d if isinstance(d, dict) else {"path": d} for d in config.get("datasets", [])]
    by_path = {e["path"]: e for e in entries}
    records = []
    for recorded in training.get("datasets", []):
        if isinstance(recorded, dict):
            records.append(recorded)
        elif PurePath(recorded).parts[-2:] == ("phantoms", "dataset.json") and config.get("phantoms"):
            records.append(phantom_record(config, modalities))
        else:
            path = repository_file(recorded)
            check_unchanged_since(path, training["date"])
            entry = by_path.get(recorded, {})
            records.append(dataset_file_record(path, origin="real", exclude=entry.get("exclude", ()), modalities=modalities))
    training["datasets"] = records
    if config:
        training["config"] = config_record(config, [r for r in records if r["origin"] == "real"])
        init = training["config"].get("init")
        if init:
            source = folder / init["bundle"]
            if source.exists():
                init["model_sha256"] = read_bundle_metadata(source)["model_sha256"]
    if training.get("config_file"):
        training["config_file"] = PurePath(training["config_file"]).name
    training["provenance_rewritten"] = {
        "by": "scrub_provenance.py",
        "sha256_before": bundle_sha,
        "changed": "paths replaced by data set names and sha256 and by file names; weights, metrics and all else unchanged",
    }
    return meta


def update_references(changed: dict[str, tuple[str, Path]]) -> None:
    """The manifest's sha256 and size, and recipes' ``init.sha256``, of the bundles rewritten."""
    doc = json.loads(MANIFEST.read_text())
    for entry in doc["models"]:
        if entry["sha256"] in changed:
            new, path = changed[entry["sha256"]]
            entry["sha256"], entry["size"] = new, path.stat().st_size
    MANIFEST.write_text(json.dumps(doc, indent=2) + "\n")
    for config in sorted(CONFIGS.glob("*.json")):
        text = config.read_text()
        for old, (new, _) in changed.items():
            text = text.replace(old, new)
        if text != config.read_text():
            config.write_text(text)
            print(f"{config.relative_to(REPO)}: init sha256 updated")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", type=Path, help="bundle zips or folders (default: the shipped ones and the test fixture)")
    p.add_argument("--check", action="store_true", help="only report bundles whose provenance still holds a path")
    args = p.parse_args(argv)
    changed: dict[str, tuple[str, Path]] = {}
    dirty = 0
    for path in args.bundles or DEFAULT_BUNDLES:
        metadata = read_bundle_metadata(path)
        paths = path_like_strings(provenance_sections(metadata))
        if not paths:
            print(f"{path.name}: provenance names no path")
            continue
        dirty += 1
        if args.check:
            print(f"{path.name}: " + "; ".join(paths))
            continue
        before = bundle_sha256(path)
        new = scrub(metadata, before, path.parent)
        left = path_like_strings(provenance_sections(new))
        if left:
            raise SystemExit(f"{path}: still a path after rewriting: {left}")
        replace_metadata(path, new)
        after = bundle_sha256(path)
        changed[before] = (after, path)
        print(f"{path.name}: provenance rewritten, sha256 {before[:12]}... -> {after[:12]}...")
    if changed:
        update_references(changed)
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
