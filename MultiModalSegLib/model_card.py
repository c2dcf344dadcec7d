"""Model cards: markdown describing a model, from its bundle metadata and its manifest entry.

Sections: summary, modalities (with intensity profiles), labels (colour, SNOMED code), training
data, metrics (each table with the source the bundle gives for it), intended use and limits,
licence, measured CPU and GPU seconds (from the manifest). Metrics are printed as the bundle stores
them (computed when it was packaged), never typed in here. A model not downloaded yet gets a card
from its manifest entry alone, which says so.
"""

from __future__ import annotations

from pathlib import Path

from .bundle import bundle_sha256
from .dropped_pieces import DEFAULT_DROPPED_PIECES, scored_choice
from .model_zoo import INSTALLED, model_status
from .models import ModelEntry, find_entry, load_manifest, read_bundle_metadata

DEFAULT_LIMITS = (
    "Research software, not a medical device: every result must be reviewed by a qualified person "
    "before any clinical use."
)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _metric_tables(metrics: dict) -> list[str]:
    """Markdown for a bundle's ``metrics``: a table per metric group, followed by its ``*_source``."""
    lines: list[str] = []
    for key, value in metrics.items():
        if key.endswith("_source"):
            continue
        source = metrics.get(f"{key}_source") or metrics.get(f"{key.split('_')[0]}_source")
        lines.append(f"**{key.replace('_', ' ')}**" + (f" (source: {source})" if source else " (source: not stated)"))
        lines.append("")
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            rows = list(value.items())
            first = rows[0][1]
            if all(isinstance(v, dict) for v in first.values()):  # case -> organ -> {metric: value}
                measures = list(next(iter(first.values())))
                header = ["case", "label", *measures]
                lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
                for case, organs in rows:
                    for organ, vals in organs.items():
                        lines.append(f"| {case} | {organ} | " + " | ".join(_fmt(vals.get(m, "")) for m in measures) + " |")
            else:  # group -> label -> value
                columns = list(first)
                lines += ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
                for group, vals in rows:
                    lines.append(f"| {group} | " + " | ".join(_fmt(vals.get(c, "")) for c in columns) + " |")
        elif isinstance(value, dict):
            lines += [f"- {k}: {_fmt(v)}" for k, v in value.items()] or ["- not recorded in this bundle"]
        else:
            lines.append(f"- {_fmt(value)}")
        lines.append("")
        if key == "real_scans" and (choice := scored_choice(source or "")) != DEFAULT_DROPPED_PIECES:
            lines += [_other_rule_note(choice), ""]
    return lines


def _other_rule_note(choice: str) -> str:
    """Under a real-scan table scored under another ``dropped_pieces`` choice than the one a segmentation now uses."""
    return (f"These figures were scored with the voxels of an organ's dropped piece as {choice}; a segmentation now "
            f"gives them their {DEFAULT_DROPPED_PIECES.replace('_', ' ')} (`--dropped-pieces`), and its figures are in "
            "the project's README (Accuracy) and `training/reports/dropped-pieces/`.")


def _seconds(title: str, values: dict[str, float]) -> list[str]:
    if not values:
        return [f"- {title}: not measured"]
    return [f"- {title}: " + "; ".join(f"{k}: {v:.2f} s" for k, v in values.items())]


def _dataset_text(record: dict | str) -> str:
    """A data set of the provenance: its name, cases and sha256 (an older bundle's path: its last two parts)."""
    if not isinstance(record, dict):
        return "/".join(Path(str(record)).parts[-2:])  # folder/dataset.json
    kind = "phantoms, " if record.get("origin") == "phantom" else ""
    return f"{record.get('name')} ({kind}{len(record.get('training', []))} training cases, sha256 {str(record.get('sha256'))[:12]}...)"


def _mix_text(config: dict) -> str | None:
    """The recipe's share of each item kind per modality (``synthesis.mix``), or None without one."""
    mix = (config.get("synthesis") or {}).get("mix") or {}
    if not mix:
        return None
    text = "; ".join(f"{mod}: " + ", ".join(f"{kind} {share:g}" for kind, share in kinds.items()) for mod, kinds in mix.items())
    if any("textured" in kinds for kinds in mix.values()):
        text += " (textured: a real CT's label map drawn at a random MR contrast with that CT's texture; counted as an MR case)"
    return text


def _run_facts(training: dict) -> list[str]:
    """One training run's facts: cases, data sets, item mix, steps, seed, device, date, which weights."""
    lines = []
    if training.get("cases"):
        lines.append("cases per modality: " + ", ".join(f"{k}: {v}" for k, v in training["cases"].items()))
    if training.get("datasets"):
        lines.append("data sets: " + ", ".join(_dataset_text(d) for d in training["datasets"]))
    mix = _mix_text(training.get("config", {}))
    if mix:
        lines.append(f"item mix: {mix}")
    for key in ("steps", "seed", "device", "date"):
        if key in training:
            lines.append(f"{key}: {training[key]}")
    average = training.get("weight_average") or {}
    if average.get("steps"):
        first, last = average["steps"]
        lines.append(f"weights: the mean of {average.get('count', '?')} checkpoints, steps {first} to {last}")
    return lines


def _training_summary(metadata: dict | None, entry: ModelEntry | None) -> list[str]:
    """The manifest's training text, then the run's facts; an ensemble's facts member by member."""
    lines = []
    if entry is not None and entry.training_data:
        lines.append(entry.training_data)
        lines.append("")
    members = (metadata or {}).get("members") or []
    if members:
        for i, member in enumerate(members, 1):
            lines.append(f"- member {i}, {member['name']} {member['version']}:")
            lines += [f"  - {fact}" for fact in _run_facts(member.get("training", {}))]
    else:
        lines += [f"- {fact}" for fact in _run_facts((metadata or {}).get("training", {}))]
    return lines or ["Not stated."]


def _member_text(member: dict) -> str:
    """One member of an ensemble as the card names it: name, version, weights, steps, and its parent if fine-tuned."""
    facts = [f"weights sha256 {member['model_sha256'][:12]}...", f"{member.get('training', {}).get('steps', '?')} training steps"]
    if member.get("parent"):
        facts.append(f"fine-tuned from {member['parent']['name']} {member['parent']['version']}")
    return f"{member['name']} {member['version']} ({', '.join(facts)})"


def render_model_card(metadata: dict | None, entry: ModelEntry | None = None) -> str:
    """Markdown card of a model from its bundle ``metadata`` and/or its manifest ``entry`` (either may be None)."""
    if metadata is None and entry is None:
        raise ValueError("render_model_card needs the bundle metadata or the manifest entry")
    meta = metadata or {}
    name = meta.get("name") or entry.name
    version = meta.get("version") or entry.version
    lines = [f"# {name} {version}", ""]
    description = meta.get("description") or (entry.description if entry else "")
    if description:
        lines += [description, ""]
    method = meta.get("method") or (entry.method if entry else "?")
    network = meta.get("network", {}).get("name")
    spacing = meta.get("spacing") or (entry.spacing if entry else None)
    facts = [f"method `{method}`"]
    if network:
        facts.append(f"network `{network}`")
    if spacing:
        facts.append("spacing " + " x ".join(f"{s:g}" for s in spacing) + " mm")
    if meta.get("patch_size"):
        facts.append("patch " + " x ".join(str(p) for p in meta["patch_size"]))
    lines += ["- " + ", ".join(facts)]
    if meta.get("members"):
        lines.append(f"- an ensemble of {len(meta['members'])} networks, their class probabilities averaged: "
                     + "; ".join(_member_text(m) for m in meta["members"]))
    if metadata is None:
        lines += ["- not downloaded yet: details below come from the models manifest only"]
    lines.append("")

    lines += ["## Modalities", ""]
    if meta.get("modalities"):
        ensemble = meta.get("inference", {}).get("polarity_ensemble", [])
        normalisations = meta.get("inference", {}).get("normalisation_ensemble", {})
        for mod, profile in meta["modalities"].items():
            fractions = normalisations.get(mod, [])
            lines.append(f"- **{mod}**: {profile.get('description') or profile.get('kind')}" + (
                "; predicted as the mean of the class probabilities of the image and of its negative (polarity ensemble)"
                if mod in ensemble else "") + (
                f"; normalised at {len(fractions)} bounds, " + ", ".join(f"{t:g}" for t in fractions)
                + " of the way to the other foreground choice's, and predicted as the mean of their class probabilities"
                " (normalisation ensemble)" if fractions else ""))
    else:
        lines += [f"- **{m}**" for m in entry.modalities]
    lines.append("")

    lines += ["## Labels", ""]
    if meta.get("labels"):
        lines += ["| value | name | colour | SNOMED CT |", "|---|---|---|---|"]
        for lab in meta["labels"]:
            lines.append(
                f"| {lab['value']} | {lab['name']} | {tuple(lab['color'])} | {lab.get('snomed') or '-'} |"
            )
    else:
        lines += [f"{i}. {n}" for i, n in enumerate(entry.labels, 1)]
    lines.append("")

    lines += ["## Training data", "", *_training_summary(metadata, entry), ""]

    lines += ["## Metrics", ""]
    if meta.get("metrics"):
        lines += _metric_tables(meta["metrics"])
    elif entry is not None and entry.metrics:
        lines += ["Summary from the models manifest (the bundle's report has the per-organ figures):", ""]
        for key, values in entry.metrics.items():
            lines.append(f"- {key.replace('_', ' ')}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in values.items()))
        lines.append("")
    else:
        lines += ["Not available" + (" until the model is downloaded." if metadata is None else " in the bundle."), ""]

    lines += ["## Intended use and limits", ""]
    intended = meta.get("intended_use") or (entry.intended_use if entry else None)
    limits = meta.get("limitations") or (entry.limitations if entry else None)
    lines.append(f"- intended use: {intended or 'not stated'}")
    lines.append(f"- limits: {limits or 'not stated'}")
    lines.append(f"- {DEFAULT_LIMITS}")
    lines.append("")

    lines += ["## Licence", "", meta.get("licence") or (entry.licence if entry else "not stated"), ""]
    if meta.get("authors"):
        lines += ["Authors: " + ", ".join(meta["authors"]), ""]

    lines += ["## Inference time (measured)", ""]
    cpu = entry.cpu_seconds if entry and entry.cpu_seconds else meta.get("training", {}).get("cpu_seconds_measured", {})
    lines += _seconds("CPU", cpu)
    lines += _seconds("GPU", entry.gpu_seconds if entry else {})
    lines.append("")

    if entry is not None:
        lines += ["## Files", ""]
        lines.append(f"- source: {entry.url or entry.file}")
        if entry.size:
            lines.append(f"- size: {entry.size / 1e6:.1f} MB")
        lines.append(f"- sha256: `{entry.sha256}`")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _verification(sha: str, entry: ModelEntry | None) -> str:
    if entry is not None:
        return f"\n## Verification\n\n- sha256 `{sha}` is the models manifest's {entry.name} {entry.version}: verified\n"
    return (
        f"\n## Verification\n\n- **unverified**: sha256 `{sha}` matches no model of the models manifest; "
        "the facts above come from the bundle's own metadata only\n"
    )


def model_card(
    name_or_path: str | Path, manifest_path: str | Path | None = None, cache_dir: str | Path | None = None
) -> str:
    """Card of a manifest model (installed or not) or of a bundle file/folder given by path.

    A bundle given by path gets the manifest's facts only when its sha256 is the manifest's, and a
    Verification section saying whether it is."""
    path = Path(name_or_path).expanduser()
    names = {e.name for e in load_manifest(manifest_path)}
    if str(name_or_path) not in names and path.exists():
        metadata = read_bundle_metadata(path)
        sha = bundle_sha256(path).lower()
        # the manifest's facts (source, sha256, timings) apply only to the very file the manifest lists
        entry = next((e for e in load_manifest(manifest_path) if e.sha256.lower() == sha), None)
        return render_model_card(metadata, entry) + _verification(sha, entry)
    entry = find_entry(str(name_or_path), manifest_path)
    status = model_status(entry, cache_dir)
    metadata = read_bundle_metadata(status.path) if status.state == INSTALLED else None
    return render_model_card(metadata, entry)
