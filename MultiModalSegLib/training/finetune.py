"""Fine-tuning: a parent model bundle trained further on new labelled cases, few-shot included.

:func:`finetune` (``mmseg finetune``) loads the parent bundle (sha256-verified), builds a
:class:`~.config.TrainConfig` from its metadata (method, network, modalities, labels, spacing,
patch size; batch size, foreground ratio, augmentation and weight decay from its recorded
training config when there is one) and runs the ordinary :class:`~.engine.Trainer`, whose
``init_state`` hook loads the parent's weights once the method is built. The run folder is
therefore an ordinary training run: ``progress.jsonl``, ``checkpoints/last.pt``, a ``STOP``
file stops it after the step (exit code 3 from the command) and rerunning the same command
resumes it. Fine-tuning adds three kinds of events to ``progress.jsonl``: ``finetune`` (the plan),
``evaluation`` (``phase`` ``before`` / ``after``, Dice per held-out group per modality per organ)
and, last of all, ``finetuned`` (the new bundle and its before/after table).

What the network trains on, per modality, through the engine's unpaired samplers:

- the new data (``--data``: ``dataset.json`` files or their folders; their ``training`` split);
- replay of old data, so that the parent's other skills are not forgotten: with ``parent_data``
  ``"auto"`` the parent's own training data sets, found by the sha256 its provenance records
  (:func:`parent_replay_data`; one not found is an error saying how to give it), or the
  ``dataset.json`` files ``parent_data`` lists; and ``phantoms`` synthetic phantoms per modality
  (CT and MR; seed ``seed``, the seed of the default recipe, so they replay its first phantoms)
  in place of phantoms the parent trained on, or of everything with ``parent_data="no"``;
- few-shot (``few_shot={"MR": 1}``): a few-shot modality keeps the labels of only N training
  cases of the new data (chosen with ``seed``); its replay and phantom cases lose their labels
  (they are kept, unlabelled, only for methods that train on unlabelled images).

Held-out cases, scored with the parent before and with the new model after (Dice per modality per
organ on whole model-space volumes, :func:`~.validation.validate`): the ``validation`` split of
the new data (group ``data``) and ``heldout_phantoms`` phantoms per modality drawn with seed
``HELDOUT_SEED + seed``, a seed no recipe trains on (group ``phantoms``).

The new bundle is written at ``out`` (never over the parent; over an existing file or folder only
with ``overwrite``): its name is ``name`` (never a models-manifest name) or
``<parent>-finetuned-<date>-<time>``, version = the parent's with a minor bump, ``parent`` = its
name, version and sha256, ``training.datasets`` = each data set by name and sha256,
``training.case_files`` = every training image and label file used by file name and sha256 (no
path: :mod:`MultiModalSegLib.provenance`), ``metrics`` = the before/after Dice. The before/after
table is also written beside it as ``<name>.finetune.md`` and ``.json``. When a held-out mean Dice
falls by more than :data:`WORSE_TOLERANCE` (:func:`worse_rows`) the new model is not saved (status
``"worse"``, the table goes to the run folder) unless ``keep_worse``.

Normalisation statistics (``norm_stats``): ``"frozen"`` (default) keeps the parent's BatchNorm
running statistics: those layers run in eval mode during fine-tuning (their affine parameters
still train), except the layers of a newly added modality, which adapt. The reason: a few volumes
give unrepresentative batch statistics (the shipped real MR has 20 slices, so most of a 48-slice
patch is padding), and updating the running statistics from them shifts every prediction of that
modality; with 1 real MR the held-out phantom MR Dice fell by 0.09 within 6 steps when they were
updated (``"train"``, the engine's ordinary behaviour).

An ensemble parent (:mod:`..bundle_members`, the default model is one) trains every member, together, in
one run: the child's recipe sets ``network.members`` (:meth:`..methods.base.Method.train_as_ensemble`), so
every loss sees the members' mean class probabilities, the output the ensemble segments with; the child is an
ensemble of as many members, member i's record naming member i of the parent. "Before" and the
worse-than-parent rule are the whole parent's. A step costs about K times one network's for K members.

A dataset with a modality the parent lacks is accepted when the method can add one: after
loading the parent's weights, ``method.add_modality(new, like=existing)`` is called (``like``
maps new to existing modalities; default the parent's first one); the method is expected to add
the new modality's own parameters, initialised from ``like``'s, and list it in
``method.modalities`` and ``method.network_spec``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..atomic import write_text_atomic
from ..bundle import Bundle, bundle_sha256, file_sha256, load_bundle, save_bundle
from ..bundle_members import trained_member_records
from ..data.dataset import Case, DatasetSpec, labelled_subset, load_dataset
from ..data.loading import PreparedCase, prepare_case
from ..data.phantoms import drawing_record, drawing_suffix, write_phantom_dataset
from ..device import resolve_device
from ..errors import BundleError, ConfigError
from ..labels import ABDOMEN_LABELS
from ..methods import get_method
from ..methods.registry import build_inference_network
from ..modalities import get_modality, modality_names, recorded_profiles
from ..models import resolve_model
from ..naming import check_new_model_name, timestamp
from ..networks.member_ensemble import member_count
from ..networks.norms import modality_norms
from ..provenance import dataset_file_record, find_dataset, missing_dataset_error, project_data_roots
from ..reporting import Reporter
from . import distributed
from .config import config_from_dict
from .engine import Trainer, _finite, _model_remap, build_configured_method
from .progress import ProgressLog, read_progress
from .validation import validate

DEFAULT_LR = 5e-5  # the rate of the few-shot evidence (training/reports/finetune-fewshot): 5e-4 lost Dice on CT and MR
WORSE_TOLERANCE = 0.02  # a held-out mean Dice that falls by more than this counts as worse (see is_worse)
DEFAULT_PHANTOMS = 4  # training phantoms per modality when the parent's own data is not at hand
DEFAULT_HELDOUT_PHANTOMS = 2  # held-out phantoms per modality
HELDOUT_SEED = 90001  # + seed: the held-out phantoms' dataset seed (no recipe trains on it)
PHANTOM_LABELS = [lab.name for lab in ABDOMEN_LABELS]


@dataclass
class FinetuneOptions:
    """The inputs of :func:`finetune` (the ``mmseg finetune`` arguments)."""

    init: str  # parent: a bundle path or a models-manifest name
    data: list[str]  # dataset.json files (or their folders)
    out: Path  # the new bundle (folder, or .zip)
    method: str | None = None  # default: the parent's
    few_shot: dict[str, int] = field(default_factory=dict)
    phantoms: int | None = None  # training phantoms per modality; None: DEFAULT_PHANTOMS unless parent data is used
    heldout_phantoms: int = DEFAULT_HELDOUT_PHANTOMS
    parent_data: str | list[str] = "auto"  # "auto": the parent's data sets found by sha256; "no": none; or dataset.json paths
    parent_data_roots: list[str] = field(default_factory=list)  # more folders where "auto" looks for them
    like: dict[str, str] = field(default_factory=dict)  # new modality -> existing one it starts from
    steps: int = 200
    lr: float = DEFAULT_LR
    warmup_steps: int | None = None  # default: a tenth of the steps, at most 10
    device: str = "auto"
    run_dir: Path | None = None  # default: training/runs/finetune-<out name>
    restart: bool = False
    quiet: bool = False
    overwrite: bool = False
    seed: int = 0
    threads: int = 0
    name: str | None = None  # default: "<parent name>-finetuned-<date>-<time>"; never a models-manifest name
    checkpoint_every: int = 10
    validate_every: int = 0  # > 0: score the held-out cases every N steps too ("validation" events), 0: before and after only
    norm_stats: str = "frozen"  # "frozen": keep the parent's BatchNorm statistics; "train": update them
    keep_worse: bool = False  # save the new model even when it is worse than its parent on the held-out cases
    reporter: Reporter | None = None  # the plan and progress (default: text on stderr, bars unless quiet)


@dataclass
class FinetuneResult:
    status: str  # "done", "stopped", or "worse" (not saved: worse than the parent, no keep_worse)
    step: int
    run_dir: Path
    bundle: Path | None = None
    before: dict | None = None
    after: dict | None = None
    table_md: Path | None = None
    table_json: Path | None = None
    worse: list[str] = field(default_factory=list)  # held-out rows where the new model is worse than its parent


# ----------------------------------------------------------------------------- small helpers


def bump_minor(version: str) -> str:
    """``1.0.3`` -> ``1.1.0`` (pre-release and build suffixes dropped)."""
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if not match:
        raise BundleError(f"parent version {version!r} is not a semantic version (X.Y.Z); fix the parent's metadata.")
    return f"{match.group(1)}.{int(match.group(2)) + 1}.0"


def bundle_stem(out: Path) -> str:
    return out.name[:-4] if out.name.lower().endswith(".zip") else out.name


def default_run_dir(out: Path) -> Path:
    return Path("training") / "runs" / f"finetune-{bundle_stem(Path(out))}"


def table_paths(out: Path) -> tuple[Path, Path]:
    """Where the before/after table goes: beside the bundle, ``<name>.finetune.md`` / ``.json``."""
    stem = bundle_stem(out)
    return out.parent / f"{stem}.finetune.md", out.parent / f"{stem}.finetune.json"


def load_parent(init: str) -> tuple[Bundle, str]:
    """The parent bundle (a path or a manifest name; sha256-verified) and its sha256."""
    path, expected = resolve_model(init)
    bundle = load_bundle(path, expected_sha256=expected)
    return bundle, expected or bundle_sha256(path)


def ensemble_note(ensemble: Bundle) -> str:
    """What fine-tuning an ensemble bundle (:mod:`..bundle_members`) does, in a sentence for the plan."""
    count = member_count(ensemble.metadata)
    return (f"{ensemble.name} {ensemble.metadata['version']} is an ensemble of {count} networks; fine-tuning trains all "
            f"{count} together (every loss sees their mean class probabilities, as the ensemble segments) and writes an "
            f"ensemble of {count}; each step takes about {count} times one network's time")


def check_output(out: Path, parent: Bundle, overwrite: bool) -> None:
    """Refuse to write over the parent, or over an existing file or folder without ``overwrite``."""
    if out.exists() and out.resolve() == Path(parent.path).resolve():
        raise ConfigError(f"--out {out} is the parent bundle; write the fine-tuned model to another path.")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} already exists; choose another path or pass --overwrite.")


def _state_mismatch(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(shape)} of another shape"]
    example = (missing or unexpected or shape or ["?"])[0]
    return f"{', '.join(parts)}, e.g. {example!r}"


def load_parent_weights(method: torch.nn.Module, parent: Bundle) -> None:
    """Load the parent's exported weights into ``method``'s inference network (strictly).

    A method whose exported network is derived from its parameters (rather than being one of its
    modules) may define ``load_inference_state(state_dict)``; otherwise it cannot start from a bundle.
    """
    loader = getattr(method, "load_inference_state", None)
    name = getattr(method, "name", type(method).__name__)
    if callable(loader):
        loader(parent.state_dict)
        return
    net = method.inference_network()
    if not any(net is m for m in method.modules()):
        raise ConfigError(
            f"method {name} exports a network derived from its parameters, so it cannot start from the weights of "
            f"{parent.path}; use --method {parent.method}."
        )
    try:
        net.load_state_dict(parent.state_dict, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"the weights of {parent.path} (method {parent.method}) do not load into method {name} "
            f"({_state_mismatch(net, parent.state_dict)}); use --method {parent.method} or one with the same network."
        ) from exc


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_norm_statistics(method: nn.Module, keep: list[str] | tuple[str, ...] = ()) -> int:
    """Run every BatchNorm layer of ``method`` on its running statistics from now on (eval mode, also
    when the engine calls ``method.train()``), except the per-modality layers of ``keep``; their
    affine parameters still train. Returns the number of layers frozen."""
    skip = {id(m) for layer in modality_norms(method) for name in keep if name in layer.norms for m in layer.norms[name].modules()}
    frozen = 0
    for module in method.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and id(module) not in skip:
            module.train = types.MethodType(_stay_in_eval, module)
            module.train(False)
            frozen += 1
    return frozen


def _dataset_label_check(spec: DatasetSpec, model_labels: list[str], parent: Bundle) -> None:
    names = [n for v, n in spec.labels.items() if v != 0]
    unknown = [n for n in names if n not in model_labels]
    if unknown:
        raise ConfigError(
            f"{spec.path}: labels {unknown} are not in model {parent.name} (it has {model_labels}); rename them to "
            "the model's label names, or map them to background with a label_remap."
        )


def _entry(case: Case, labelled: bool) -> dict:
    entry = {"name": case.name, "image": str(case.image), "modality": case.modality}
    if labelled and case.label is not None:
        entry["label"] = str(case.label)
        if case.label_remap is not None:
            entry["label_remap"] = {str(k): int(v) for k, v in case.label_remap.items()}
    return entry


def _write_dataset(path: Path, spec: DatasetSpec, training: list[tuple[Case, bool]]) -> Path:
    """A derived ``dataset.json`` (absolute paths) holding ``training`` as (case, keep its label)."""
    doc = {
        "name": spec.name,
        "description": f"training cases of {spec.path} used by a fine-tune",
        "licence": spec.licence,
        "labels": {str(k): v for k, v in spec.labels.items()},
        "training": [_entry(c, keep) for c, keep in training],
    }
    new = json.dumps(doc, indent=2) + "\n"
    if not path.exists() or path.read_text() != new:
        write_text_atomic(path, new)
    return path


# ----------------------------------------------------------------------------- the plan


@dataclass
class _Source:
    spec: DatasetSpec
    kind: str  # "data", "parent" or "phantoms"
    training: list[tuple[Case, bool]]  # (case, keeps its label)


@dataclass
class _Plan:
    parent: Bundle
    parent_sha256: str
    method: str
    modalities: list[str]
    new_modalities: list[str]
    sources: list[_Source]
    heldout: list[tuple[str, DatasetSpec, list[Case]]]  # (group, spec, labelled cases)
    replay: dict
    notes: list[str]


def _modality_of(name: str) -> str:
    return get_modality(name).name


def _check_modalities(path: str | Path) -> None:
    """A case whose modality the library does not know: one error naming the file and the case."""
    path = Path(path)
    path = path / "dataset.json" if path.is_dir() else path
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # load_dataset reports it
    for split in ("training", "validation", "test"):
        entries = raw.get(split, []) if isinstance(raw, dict) else []
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            m = entry.get("modality") if isinstance(entry, dict) else None
            if isinstance(m, str) and m.strip().casefold() not in [n.casefold() for n in modality_names()]:
                raise ConfigError(
                    f"{path}: {split} case {i} has modality {m!r}, which MultiModalSeg does not know "
                    f"(known: {', '.join(modality_names())}); fix its \"modality\"."
                )


def _parent_data_choice(parent_data: str | list[str] | tuple[str, ...]) -> str | list[str]:
    """``"auto"``, ``"no"`` or a list of dataset.json paths, from the option's value(s)."""
    values = [parent_data] if isinstance(parent_data, str) else list(parent_data) or ["auto"]
    words = [v for v in values if v in ("auto", "no")]
    if words and len(values) > 1:
        raise ConfigError(f"--parent-data {' '.join(values)}: give auto, no, or one or more dataset.json paths, not both.")
    return words[0] if words else values


def parent_replay_data(parent: Bundle, parent_data: str | list[str] = "auto", roots: list[str] | tuple = ()) -> tuple[list[Path], bool]:
    """The data sets to replay of ``parent``'s training data, and whether it also trained on phantoms.

    ``"auto"``: each recorded data set with training cases is found by its sha256 under ``roots``
    and :func:`~MultiModalSegLib.provenance.project_data_roots`; one that is not found (or is recorded
    only by a path, as older bundles did) is an error saying how to give it. Phantoms the parent
    generated are not looked for: the fine-tune replays fresh ones. ``"no"``: nothing. A list of
    paths: those dataset.json files (or folders), used as given.
    """
    choice = _parent_data_choice(parent_data)
    records = parent.metadata.get("training", {}).get("datasets", []) or []
    phantoms = any(isinstance(r, dict) and r.get("origin") == "phantom" for r in records)
    if choice == "no":
        return [], phantoms
    if isinstance(choice, list):
        paths = [Path(p).expanduser() for p in choice]
        for p in paths:
            if not (p / "dataset.json" if p.is_dir() else p).is_file():
                raise ConfigError(f"--parent-data {p}: no dataset.json there; give the parent's training data set file or its folder.")
        return paths, phantoms
    search = [Path(r).expanduser() for r in roots] + project_data_roots()
    found = []
    for record in records:
        if isinstance(record, dict) and (record.get("origin") == "phantom" or not record.get("training")):
            continue  # regenerated as fresh phantoms, or a data set only scored during training
        path = find_dataset(record["sha256"], search) if isinstance(record, dict) and record.get("sha256") else None
        if path is None:
            raise missing_dataset_error(parent.name, record, search)
        found.append(path)
    return found, phantoms


def parent_phantom_drawing(parent: Bundle) -> dict:
    """How ``parent``'s phantoms were drawn, as its phantom data set's record says, in the form a recipe's
    ``phantoms`` block takes: ``{"thorax": True | [modalities]}`` and ``{"anatomy": 2}`` when set, else
    nothing (a parent drawn with neither gives ``{}``)."""
    for r in parent.metadata.get("training", {}).get("datasets", []) or []:
        drawing = drawing_record((r.get("phantoms") or {}) if isinstance(r, dict) else {})
        if drawing:
            return drawing
    return {}


def _plan(opts: FinetuneOptions, run: Path, parent: Bundle, parent_sha: str) -> _Plan:
    method_name = opts.method or parent.method
    cls = get_method(method_name)
    parent_modalities = list(parent.modalities)
    model_labels = [lab.name for lab in parent.labels]
    notes: list[str] = []
    if not opts.data:
        raise ConfigError("no --data given; name at least one dataset.json with labelled training cases.")

    # the new data
    for p in opts.data:
        _check_modalities(p)
    data: list[DatasetSpec] = [load_dataset(p) for p in opts.data]
    new_modalities: list[str] = []
    for spec in data:
        if not spec.cases("training"):
            raise ConfigError(f"{spec.path}: the \"training\" list is empty; add labelled cases to fine-tune on.")
        _dataset_label_check(spec, model_labels, parent)
        for m in spec.modalities:
            if m not in parent_modalities and m not in new_modalities:
                if not callable(getattr(cls, "add_modality", None)):
                    raise ConfigError(
                        f"{spec.path}: has {m} cases but model {parent.name} knows only {parent_modalities} and method "
                        f"{method_name} cannot add a modality; remove the {m} cases or use a method that can."
                    )
                new_modalities.append(m)
    if not any(c.labelled for spec in data for c in spec.cases("training")):
        raise ConfigError(f"{', '.join(str(s.path) for s in data)}: no training case has a label; add \"label\" to some cases.")
    for new in new_modalities:
        like = opts.like.get(new, parent_modalities[0])
        if like not in parent_modalities:
            raise ConfigError(f"--like {new}={like}: {like} is not a modality of model {parent.name} ({parent_modalities}).")
    for m in opts.like:
        if _modality_of(m) not in new_modalities:
            raise ConfigError(f"--like {m}=...: the data has no new modality {m}; drop the --like option.")
    modalities = parent_modalities + new_modalities

    # few-shot: the labelled cases of the scarce modality come from the new data only
    few_shot = {_modality_of(m): int(n) for m, n in opts.few_shot.items()}
    keep: dict[Path, bool] = {}
    for m, n in few_shot.items():
        if m not in modalities:
            raise ConfigError(f"--few-shot {m}={n}: model and data have no {m}; use one of {modalities}.")
        mine = [c for spec in data for c in spec.cases("training", modality=m)]
        labelled = [c for c in mine if c.labelled]
        if n < 1 or n > len(labelled):
            raise ConfigError(
                f"--few-shot {m}={n}: the data has {len(labelled)} labelled {m} training cases; give 1 to {len(labelled)}."
            )
        kept = labelled_subset(mine, n, opts.seed)
        for c, k in zip(mine, kept, strict=True):
            keep[c.image] = k.labelled

    sources = [_Source(s, "data", [(c, keep.get(c.image, c.labelled)) for c in s.cases("training")]) for s in data]
    seen = {c.image for s in data for c in s.cases("training")} | {c.image for s in data for c in s.cases("validation")}

    def replay_cases(spec: DatasetSpec) -> list[tuple[Case, bool]]:
        out = []
        for c in spec.cases("training"):
            if c.modality in modalities and c.image not in seen:
                out.append((c, c.labelled and c.modality not in few_shot))
                seen.add(c.image)
        return out

    # replay: the parent's own training data sets, found by sha256 (or given), so that it keeps what it knew
    found, parent_phantoms = parent_replay_data(parent, opts.parent_data, opts.parent_data_roots)
    replay: dict = {"parent_data": []}
    for p in found:
        spec = load_dataset(p)
        if [n for v, n in spec.labels.items() if v and n not in model_labels]:
            notes.append(f"the parent's data set '{spec.name}': labels differ from the model's; not replayed")
            continue
        sources.append(_Source(spec, "parent", replay_cases(spec)))
        replay["parent_data"].append({"name": spec.name, "sha256": file_sha256(spec.path)})
    use_parent = bool(replay["parent_data"])

    # phantoms: training replay, and held-out
    phantom_ok = set(model_labels) == set(PHANTOM_LABELS)
    n_train = opts.phantoms if opts.phantoms is not None else (0 if use_parent and not parent_phantoms else DEFAULT_PHANTOMS)
    if parent_phantoms and opts.parent_data != "no" and n_train:
        notes.append(f"the parent's phantoms are replayed as {n_train} fresh phantoms per modality")
    for what, n in (("--phantoms", opts.phantoms or 0), ("--heldout-phantoms", opts.heldout_phantoms)):
        if n < 0:
            raise ConfigError(f"{what} {n}: give a count of 0 or more.")
        if n and not phantom_ok:
            raise ConfigError(f"{what} {n}: phantoms are labelled {PHANTOM_LABELS}, model {parent.name} has {model_labels}; pass {what} 0.")
    n_train = n_train if phantom_ok else 0
    uses_unlabelled = bool(getattr(cls, "uses_unlabelled", False))
    counts = {
        m: (n_train if m in modalities and (m not in few_shot or uses_unlabelled) else 0) for m in ("CT", "MR")
    }
    drawing = parent_phantom_drawing(parent)  # replayed phantoms look like the parent's
    thorax, anatomy = drawing.get("thorax", False), drawing.get("anatomy", 1)
    replay["phantoms"] = {**counts, "seed": opts.seed, **drawing}
    if sum(counts.values()):
        folder = run / f"phantoms-ct{counts['CT']}-mr{counts['MR']}-seed{opts.seed}{drawing_suffix(drawing)}"
        if not (folder / "dataset.json").exists():
            bar = _reporter(opts).bar(sum(counts.values()), "writing replay phantoms")
            write_phantom_dataset(folder, counts["CT"], counts["MR"], opts.seed, progress=lambda done, _total: bar.update(done),
                                  thorax=thorax, anatomy=anatomy)
            bar.close()
        spec = load_dataset(folder)
        sources.append(_Source(spec, "phantoms", replay_cases(spec)))

    heldout: list[tuple[str, DatasetSpec, list[Case]]] = []
    for spec in data:
        val = [c for c in spec.cases("validation", labelled=True) if c.modality in modalities]
        if val:
            heldout.append(("data", spec, val))
    k = opts.heldout_phantoms if phantom_ok else 0
    held = {m: (k if m in modalities else 0) for m in ("CT", "MR")}
    if sum(held.values()):
        seed = HELDOUT_SEED + opts.seed
        folder = run / f"heldout-ct{held['CT']}-mr{held['MR']}-seed{seed}"
        if not (folder / "dataset.json").exists():
            bar = _reporter(opts).bar(sum(held.values()), "writing held-out phantoms")
            write_phantom_dataset(folder, held["CT"], held["MR"], seed, n_validation=max(held.values()), progress=lambda done, _total: bar.update(done))
            bar.close()
        spec = load_dataset(folder)
        heldout.append(("phantoms", spec, spec.cases("validation", labelled=True)))
    replay["heldout_phantoms"] = {**held, "seed": HELDOUT_SEED + opts.seed}
    return _Plan(parent, parent_sha, method_name, modalities, new_modalities, sources, heldout, replay, notes)


# ----------------------------------------------------------------------------- evaluation


def _prepare_heldout(plan: _Plan, fractions: dict[str, list[float]]) -> list[tuple[str, PreparedCase]]:
    """The held-out cases, normalised with the parent's profiles (which the fine-tuned model keeps), so
    that before and after are scored on the same inputs; a new modality gets the library's profile. The
    modalities of the parent's normalisation ensemble (``fractions``, which the child's recipe keeps) carry
    its passes, so both are scored as their bundles segment."""
    model_values = {lab.name: lab.value for lab in plan.parent.labels}
    spacing = plan.parent.metadata["spacing"]
    profiles = recorded_profiles(plan.parent.metadata)
    out = []
    for group, spec, cases in plan.heldout:
        for c in cases:
            remap = _model_remap(c, spec.labels, model_values)
            case = Case(c.name, c.image, c.modality, c.label, remap, remap_is_table=c.label_remap is None)
            out.append((group, prepare_case(case, spacing, list(model_values.values()), profiles.get(c.modality),
                                            fractions.get(c.modality, (0.0,)))))
    return out


def evaluate_bundle(bundle: Bundle, cases: list[tuple[str, PreparedCase]], device: torch.device) -> dict:
    """Dice per held-out group per modality per organ (and ``mean``) of ``bundle`` on ``cases``, each
    modality predicted as the bundle declares (its polarity ensemble; the normalisation ensemble's passes
    come with the cases, :func:`_prepare_heldout`); cases of a modality the bundle lacks are left out."""
    net = build_inference_network(bundle.metadata)
    net.load_state_dict(bundle.state_dict)
    net.to(device)
    out: dict = {}
    for group in dict.fromkeys(g for g, _ in cases):
        mine = [c for g, c in cases if g == group and c.modality in bundle.modalities]
        if mine:
            out[group] = validate(net, mine, bundle.labels, bundle.metadata["patch_size"], device,
                                  polarity_ensemble=bundle.metadata.get("inference", {}).get("polarity_ensemble", []))
    return _finite(out)


def _counts(cases: list[tuple[str, PreparedCase]]) -> dict:
    out: dict = {}
    for group, c in cases:
        out.setdefault(group, {}).setdefault(c.modality, 0)
        out[group][c.modality] += 1
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def before_after_table(before: dict, after: dict, counts: dict, labels: list[str], title: str) -> str:
    """Markdown: one row per held-out group, modality and organ (then the mean), Dice before, after, change."""
    lines = [f"# {title}", "", "| held-out | modality | cases | organ | Dice before | Dice after | change |", "|---|---|---|---|---|---|---|"]
    for group, mods in counts.items():
        for modality, n in mods.items():
            for organ in [*labels, "mean"]:
                b = before.get(group, {}).get(modality, {}).get(organ)
                a = after.get(group, {}).get(modality, {}).get(organ)
                change = f"{a - b:+.3f}" if a is not None and b is not None else "-"
                row = f"| {group} | {modality} | {n} | {'**mean**' if organ == 'mean' else organ} | {_fmt(b)} | {_fmt(a)} | {change} |"
                lines.append(row)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the run


def _config(opts: FinetuneOptions, plan: _Plan, run: Path, datasets: list[str], name: str, version: str):
    parent = plan.parent
    recorded = parent.metadata.get("training", {}).get("config", {})
    recorded = recorded if isinstance(recorded, dict) else {}
    params = {k: v for k, v in parent.metadata["network"].get("params", {}).items() if k not in ("out_channels", "modalities")}
    members = member_count(parent.metadata)
    warmup = opts.warmup_steps if opts.warmup_steps is not None else min(10, opts.steps // 10)
    raw = {
        "name": name,
        "method": plan.method,
        "method_params": dict(recorded.get("method_params", {})) if plan.method == parent.method else {},
        "network": {"name": parent.metadata["network"]["name"], "params": params,
                    **({"members": members} if members > 1 else {})},  # an ensemble trains every member
        "datasets": datasets,
        "labels": [lab.to_dict() for lab in parent.labels],
        "modalities": plan.modalities,
        "spacing": list(parent.metadata["spacing"]),
        "patch_size": list(parent.metadata["patch_size"]),
        "batch_size": int(recorded.get("batch_size", 2)),
        "foreground_ratio": float(recorded.get("foreground_ratio", 0.67)),
        "augment": bool(recorded.get("augment", True)),
        "polarity": _parent_polarity(parent.metadata, recorded, plan.modalities),
        "normalisation_ensemble": _parent_normalisation(parent.metadata, plan.modalities),
        "weight_decay": float(recorded.get("weight_decay", 1e-4)),
        "lr": float(opts.lr),
        "schedule": {"name": "cosine", "warmup_steps": int(warmup)},
        "steps": int(opts.steps),
        "validate_every": int(opts.validate_every) if opts.validate_every > 0 else 10**9,  # held-out: before, after, every N
        "checkpoint_every": int(opts.checkpoint_every),
        "log_every": 1 if opts.steps <= 50 else 5,
        "seed": int(opts.seed),
        "device": opts.device,
        "threads": int(opts.threads),
        "bundle": {
            "name": name,
            "version": version,
            "description": f"{parent.name} {parent.metadata['version']} fine-tuned ({plan.method}) by mmseg finetune",
            "licence": parent.metadata.get("licence", "Apache-2.0"),
        },
    }
    return config_from_dict(raw)


def _parent_polarity(metadata: dict, recorded: dict, modalities: list[str]) -> dict[str, float]:
    """The parent's ``polarity`` shares for the fine-tune's modalities, so that the child keeps the parent's
    polarity ensemble (a parent that records the ensemble but not its share is fine-tuned at half)."""
    shares = recorded.get("polarity") if isinstance(recorded.get("polarity"), dict) else {}
    ensemble = metadata.get("inference", {}).get("polarity_ensemble", [])
    return {m: float(shares.get(m, 0.5)) for m in modalities if m in ensemble or m in shares}


def _parent_normalisation(metadata: dict, modalities: list[str]) -> dict[str, list[float]]:
    """The parent's ``inference.normalisation_ensemble`` for the fine-tune's modalities (an inference setting,
    not learnt): the child's recipe names it, so the child's bundle records it and segments those modalities as
    its parent did, and the held-out cases of both are scored with its passes; empty if the parent has none."""
    named = metadata.get("inference", {}).get("normalisation_ensemble", {})
    return {m: [float(x) for x in f] for m, f in named.items() if m in modalities}


def _parent_shaped_method(plan: _Plan, cfg) -> torch.nn.Module:
    """The method built for the parent's modalities (as the engine builds it, on the CPU)."""
    return build_configured_method(cfg, list(plan.parent.modalities), plan.parent.labels)


def _init_hook(plan: _Plan, cfg, opts: FinetuneOptions):
    """The Trainer's ``init_state``: the parent's weights (and any new modality) in the method."""

    def init(method: torch.nn.Module) -> torch.nn.Module:
        if plan.new_modalities:  # build it with the parent's modalities, then let the method add the new ones
            method = _parent_shaped_method(plan, cfg)
        load_parent_weights(method, plan.parent)
        for new in plan.new_modalities:
            like = _modality_of(opts.like.get(new, plan.parent.modalities[0]))
            method.add_modality(new, like=like)
            if new not in list(method.modalities):
                raise ConfigError(f"method {cfg.method} did not add modality {new}; it cannot be fine-tuned on {new} cases.")
        if opts.norm_stats == "frozen":
            freeze_norm_statistics(method, keep=plan.new_modalities)
        return method

    return init


def _case_files(plan: _Plan, uses_unlabelled: bool) -> list[dict]:
    """Every training image and label used, by file name and sha256, with its case and data set."""
    out = []
    for source in plan.sources:
        for c, labelled in source.training:
            if not labelled and not uses_unlabelled:
                continue
            row = {"name": c.name, "modality": c.modality, "source": source.kind, "dataset": source.spec.name,
                   "image": Path(c.image).name, "image_sha256": file_sha256(c.image)}  # fmt: skip
            if labelled and c.label is not None:
                row.update(label=Path(c.label).name, label_sha256=file_sha256(c.label))
            out.append(row)
    return out


def _reporter(opts: FinetuneOptions) -> Reporter:
    return opts.reporter or Reporter(quiet=opts.quiet)


def new_model_name(opts: FinetuneOptions, parent: Bundle, run: Path) -> str:
    """``--name`` (never a models-manifest name), else the name a resumed run already chose, else
    ``<parent name>-finetuned-<date>-<time>``."""
    if opts.name:
        return check_new_model_name(opts.name)
    if not opts.restart:
        chosen = [r.get("name") for r in read_progress(run / "progress.jsonl") if r.get("event") == "finetune"]
        if chosen and chosen[-1]:
            return chosen[-1]
    base = re.sub(r"-finetuned-\d{8}-\d{6}$", "", parent.name)
    return f"{base}-finetuned-{timestamp()}"


def worse_rows(before: dict, after: dict, tolerance: float = WORSE_TOLERANCE) -> list[str]:
    """The held-out groups and modalities whose mean Dice fell by more than ``tolerance``, as
    ``"phantoms CT 0.828 -> 0.716 (-0.112)"``. With a few held-out cases per modality a change of
    0.01-0.02 is within their noise (``training/reports/finetune-fewshot``); more is a worse model."""
    rows = []
    for group, mods in after.items():
        for modality, row in mods.items():
            b = before.get(group, {}).get(modality, {}).get("mean")
            a = row.get("mean")
            if a is not None and b is not None and a < b - tolerance:
                rows.append(f"{group} {modality} {b:.3f} -> {a:.3f} ({a - b:+.3f})")
    return rows


def _source_records(plan: _Plan, uses_unlabelled: bool) -> list[dict]:
    """Each data set the fine-tune trained on, by name and sha256 (the originals, not the run's lists)."""
    records = []
    for source in plan.sources:
        used = [(c, labelled) for c, labelled in source.training if labelled or uses_unlabelled]
        if not used:
            continue
        origin = "phantom" if source.kind == "phantoms" else "real"
        phantoms = plan.replay["phantoms"] if source.kind == "phantoms" else None
        record = dataset_file_record(source.spec.path, origin=origin, phantoms=phantoms)
        record.update(role=source.kind, training=[c.name for c, _ in used], unlabelled=[c.name for c, lab in used if not lab])
        records.append(record)
    return records


def finetune(opts: FinetuneOptions) -> FinetuneResult:
    """Fine-tune ``opts.init`` on ``opts.data`` and write the new bundle at ``opts.out`` (see the module doc)."""
    out = Path(opts.out)
    if opts.norm_stats not in ("frozen", "train"):
        raise ConfigError(f"--norm-stats {opts.norm_stats!r}: give frozen or train.")
    parent, parent_sha = load_parent(opts.init)
    check_output(out, parent, opts.overwrite)
    run = Path(opts.run_dir) if opts.run_dir else default_run_dir(out)
    name = new_model_name(opts, parent, run)
    run.mkdir(parents=True, exist_ok=True)
    # under torchrun rank 0 plans first (it writes the phantoms and data lists) and alone logs, scores and writes
    distributed.setup(resolve_device(opts.device))
    main = distributed.is_main()
    reporter = _reporter(opts) if main else Reporter.silent()
    opts = dataclasses.replace(opts, reporter=reporter)
    version = bump_minor(parent.metadata["version"])
    if not main:
        distributed.barrier()
    reporter.plan(
        f"fine-tuning {parent.name} {parent.metadata['version']} into {name} {version}: {opts.steps} steps at lr {opts.lr:g}"
        f"{' (method ' + opts.method + ')' if opts.method else ''}, data {', '.join(str(d) for d in opts.data)}\n"
        f"  run folder: {run} (a STOP file or Ctrl-C stops it, the same command resumes); new bundle: {out}",
        parent=parent.name, name=name, version=version, steps=opts.steps, lr=opts.lr, run=str(run), out=str(out),
    )  # fmt: skip
    plan = _plan(opts, run, parent, parent_sha)
    if member_count(parent.metadata) > 1:
        plan.notes.append(ensemble_note(parent))
    for note in plan.notes:
        reporter.note(f"note: {note}")
    datasets = [
        str(_write_dataset(run / "data" / f"{i:02d}-{s.kind}.json", s.spec, s.training)) for i, s in enumerate(plan.sources) if s.training
    ]
    if main:
        distributed.barrier()
    cfg = _config(opts, plan, run, datasets, name, version)
    load_parent_weights(_parent_shaped_method(plan, cfg), parent)  # fail before any data is prepared
    # the parent's intensity profiles: its weights meet the inputs they were trained on (a new modality gets the library's)
    profiles = recorded_profiles(parent.metadata)
    trainer = Trainer(cfg, run, restart=opts.restart, quiet=opts.quiet, init_state=_init_hook(plan, cfg, opts),
                      reporter=reporter if main else None, profiles=profiles)  # fmt: skip
    if not main:  # another torchrun rank: it trains its share of each batch, nothing more
        result = trainer.run()
        return FinetuneResult(result.status, result.step, run)
    parent_info = {"name": parent.name, "version": parent.metadata["version"], "sha256": parent_sha}
    log = ProgressLog(run / "progress.jsonl")
    log.write("finetune", parent=parent_info, name=name, method=plan.method, out=str(out), data=[str(p) for p in opts.data],
              few_shot=opts.few_shot, replay=plan.replay, new_modalities=plan.new_modalities, notes=plan.notes)  # fmt: skip
    log.close()
    trainer.build()
    device = resolve_device(opts.device)
    fractions = cfg.normalisation_ensemble  # the parent's, named in the child's recipe (_config)
    heldout = _prepare_heldout(plan, fractions)
    counts = _counts(heldout)
    before_file = run / "evaluation-before.json"
    key = {"parent_sha256": parent_sha, "cases": [f"{g}/{c.modality}/{c.name}" for g, c in heldout],
           **({"normalisation_ensemble": fractions} if fractions else {})}
    cached = json.loads(before_file.read_text()) if before_file.exists() else {}
    if cached.get("key") == key:  # a resumed run: the parent was scored already
        before = cached["dice"]
    else:
        if heldout:
            reporter.plan(f"scoring the parent on {len(heldout)} held-out cases")
        before = evaluate_bundle(parent, heldout, device)
        write_text_atomic(before_file, json.dumps({"key": key, "dice": before}, indent=2) + "\n")
    if opts.validate_every > 0:  # the Trainer scores the held-out cases every N steps (a live Dice curve)
        trainer.val_cases = [c for _, c in heldout if c.modality in plan.modalities]
    if not any(r.get("event") == "evaluation" for r in read_progress(run / "progress.jsonl")):
        _log(run, "evaluation", phase="before", dice=before, cases=counts)
    result = trainer.run()
    if result.status != "done":
        return FinetuneResult(result.status, result.step, run, before=before)

    trained = load_bundle(result.bundle)
    if heldout:
        reporter.plan(f"scoring the new model on {len(heldout)} held-out cases")
    after = evaluate_bundle(trained, heldout, device)
    _log(run, "evaluation", phase="after", dice=after, cases=counts)
    title = f"{name} {version}: fine-tuned from {parent.name} {parent.metadata['version']}, held-out Dice before and after"
    md = before_after_table(before, after, counts, [lab.name for lab in parent.labels], title)
    worse = worse_rows(before, after)
    if worse and not opts.keep_worse:
        md_path, json_path = run / "finetune-table.md", run / "finetune-table.json"
        write_text_atomic(md_path, md)
        write_text_atomic(json_path, json.dumps({"name": name, "version": version, "parent": parent_info, "cases": counts,
                                                 "before": before, "after": after, "worse": worse}, indent=2) + "\n")  # fmt: skip
        _log(run, "refused", reason="worse than the parent on the held-out cases", worse=worse, table=str(md_path))
        return FinetuneResult("worse", result.step, run, None, before, after, md_path, json_path, worse)
    meta = copy.deepcopy(trained.metadata)
    uses_unlabelled = bool(getattr(get_method(plan.method), "uses_unlabelled", False))
    meta["parent"] = parent_info
    meta["training"]["datasets"] = _source_records(plan, uses_unlabelled)
    meta["training"]["case_files"] = _case_files(plan, uses_unlabelled)
    meta["training"]["finetune"] = {
        "parent": parent_info,
        "data": [dataset_file_record(p) for p in opts.data],
        "few_shot": {k: int(v) for k, v in opts.few_shot.items()},
        "replay": plan.replay,
        "new_modalities": plan.new_modalities,
        "norm_stats": opts.norm_stats,
        "lr": opts.lr,
        "notes": plan.notes,
    }
    meta["metrics"] = {"heldout_dice_before": before, "heldout_dice_after": after, "heldout_cases": counts}
    if worse:
        meta["metrics"]["worse_than_parent"] = worse  # kept with --keep-worse
    if "members" in meta:  # an ensemble: each member's record carries the fine-tune and its own parent member
        meta["members"] = trained_member_records(meta, trained.state_dict, len(meta["members"]), parent.metadata["members"])
    for key_name in ("model_sha256", "format_version"):
        meta.pop(key_name, None)
    bundle_path = save_bundle(out, meta, trained.state_dict, overwrite=opts.overwrite)
    md_path, json_path = table_paths(out)
    write_text_atomic(md_path, md)
    summary = {"bundle": str(bundle_path), "name": name, "version": version, "parent": parent_info,
               "cases": counts, "before": before, "after": after, "worse": worse}  # fmt: skip
    write_text_atomic(json_path, json.dumps(summary, indent=2) + "\n")
    _log(run, "finetuned", bundle=str(bundle_path), table=str(md_path), version=version)
    return FinetuneResult("done", result.step, run, bundle_path, before, after, md_path, json_path, worse)


def _log(run: Path, event: str, **fields) -> None:
    log = ProgressLog(run / "progress.jsonl")
    log.write(event, **fields)
    log.close()
