"""Training configuration: a JSON file under ``training/configs/`` read into :class:`TrainConfig`.

Relative paths in a config are relative to the config file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..data.phantoms import anatomy_record, thorax_modalities
from ..data.polarity import check_polarity
from ..data.profile_jitter import check_normalisation_ensemble, check_profile_jitter
from ..errors import ConfigError, InputError
from ..labels import ABDOMEN_LABELS, LabelInfo
from ..modalities import ModalityProfile, get_modality, with_params
from .weight_average import WeightAverage

LABEL_SETS = {"abdomen": ABDOMEN_LABELS}


@dataclass
class TrainConfig:
    """Everything a training run needs; see ``training/configs/*.json`` for examples.

    ``datasets``: paths of ``dataset.json`` files, or ``{"path": ..., "weight": w}`` to draw that
    dataset's cases ``w`` times as often as a case of weight 1. ``phantoms``: ``{"ct": N, "mr": M,
    "validation": K, "seed": S}`` generates that many synthetic cases into the run folder
    (``"thorax": true``: with lung bases, diaphragm, heart and lower ribs above the abdomen;
    ``"thorax": ["CT"]``: for the phantoms of those modalities only; ``"anatomy": 2``: wider organ
    shapes, 1 by default; ``"anatomy": {"CT": 2}``: the wider shapes for those modalities only).
    ``few_shot``: ``{"MR": 1}`` keeps the labels of only that many training cases of a modality.
    ``schedule``: ``{"name": "cosine" | "poly", "warmup_steps": W, "power": 0.9}``.
    A dataset entry may add ``"exclude": [case names]`` to leave those cases out (e.g. a
    leave-one-out check). ``synthesis``: ``{"sources": ["datasets", "phantoms"], "mix": {"CT":
    {"real": a, "synthetic": b, "phantom": c}, "MR": {...}}}`` draws each item of a modality's batch
    from its real cases, its phantoms or images synthesised from the labelled training cases' label
    maps (:mod:`..data.synthesis`) with those shares; empty: real and phantom cases alike, by weight.
    Synthesised items draw every source label map alike (case weights do not apply to them); a
    mix's ``"real_maps": e`` draws that share synthesised from the real (dataset) sources' maps alone.
    An MR-like modality's mix may name ``"textured": d``: images synthesised from the label maps of
    the real CT sources alone, each structure keeping that CT's texture under the MR contrast drawn
    (:func:`..data.synthesis.textured`).
    ``"ct_arterial_share": s`` turns that share of the synthesised CT images that are not drawn at
    the source's measured HU into arterial-phase images (default 0). ``"gamma": {"MR": {"range":
    [low, high], "prob": p}}`` sets the random gamma of a modality's synthesised images (default
    range 0.7-1.5, probability 0.5). ``"mr_random_share": s`` gives that share of the synthesised MR
    images fully random structure means instead of a weighting's table (default 0.25);
    ``"scale": s`` scales the label patches by a random factor in ``1 +- s`` per axis (default 0.15).
    ``"generator": 2`` draws each labelled organ as its own tissue and normalises each image on the
    scale of its whole source, as inference normalises a whole scan; without it, 1, the synthesiser
    older recipes and the shipped models were trained with (see :mod:`..data.synthesis`).
    ``intensity_profiles``: ``{"MR": {"foreground": "above_mean"}}`` replaces parameters of the
    library's intensity profile of a modality for this run (a recipe pins the profile a shipped model
    was trained with, so that it still reproduces that model; default: the library's profiles).
    ``profile_jitter``: ``{"MR": s}`` normalises that share of a modality's training items (real,
    phantom and synthesised) with bounds drawn between the two foreground choices of its percentile
    profile (:mod:`..data.profile_jitter`); inference keeps the profile's own bounds.
    ``polarity``: ``{"MR": s}`` shows that share of a modality's training items (real, phantom and
    synthesised) as their negative, ``1 - x``, and the bundle averages the probabilities of an image
    and of its negative at inference (:mod:`..data.polarity`; percentile profiles only).
    ``normalisation_ensemble``: ``{"MR": [0, 0.5, 1]}`` makes the run's bundle segment that modality once
    per fraction ``t``, normalised with its profile's bounds moved ``t`` of the way to its other foreground
    choice's, and average the passes' probabilities (``inference.normalisation_ensemble``), and predicts the
    in-run validation cases of that modality the same way, so that the run logs what its bundle delivers.
    It changes no training step: a run may take it up or drop it when resumed.
    ``cpu_bfloat16``: true trains on a CPU under bfloat16 autocast where the processor computes bfloat16
    natively (AVX512-BF16 or AMX; several times faster per step there, ``benchmarks/training_precision.py``),
    in float32 elsewhere; each session's start event says which (``precision``). It changes the
    recipe, unlike ``threads``; on a GPU ``amp`` decides.
    ``cpu_channels_last``: true (default) keeps the 3D convolution kernels, and so the activations,
    channels-last when training on a CPU (:func:`..device.cpu_channels_last`; faster per step,
    ``benchmarks/training_memory_format.py``); like ``threads`` it changes only the order of the float32
    sums, not the recipe, so a run may be resumed with either. Each session's start event names the layout.
    ``weight_average``: ``{"start": S, "every": E}`` gives the run's bundle the mean of the weights after
    steps S, S + E, ... up to the last (:mod:`.weight_average`, stochastic weight averaging); it changes no
    training step, and a finished run also writes its last step's weights as ``bundle_last_step``.
    ``network``: ``{"name": ..., "params": {...}}``; ``"members": K`` trains K networks of that architecture
    together as one ensemble (:meth:`..methods.base.Method.train_as_ensemble`: the losses see their mean class
    probabilities) and exports an ensemble bundle; fine-tuning an ensemble bundle sets it.
    ``init``: ``{"bundle": PATH, "sha256": HEX}`` starts the network from that bundle's weights
    (:mod:`.warm_start`: any U-Net-family method from any other; the sha256 is checked first; a single network
    from an ensemble bundle's first member, an ensemble recipe's member i from member i of an ensemble of as many).
    ``pretrain``: ``{"task": "masked_reconstruction", "steps": N, "lr": L, ...}`` pretrains the
    method's network self-supervised on the run's training images before training
    (:mod:`.pretraining`; e.g. LSSC's Transformer, whose paper starts from ImageNet weights).
    """

    name: str = "model"
    method: str = "ummkd"
    method_params: dict = field(default_factory=dict)
    network: dict = field(default_factory=lambda: {"name": "unet3d", "params": {"features": [16, 32, 64, 128]}})
    datasets: list = field(default_factory=list)
    phantoms: dict = field(default_factory=dict)
    labels: str | list = "abdomen"
    modalities: list[str] = field(default_factory=lambda: ["CT", "MR"])
    spacing: list[float] = field(default_factory=lambda: [3.0, 3.0, 3.0])
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    batch_size: int = 2
    foreground_ratio: float = 0.67
    augment: bool = True
    few_shot: dict = field(default_factory=dict)
    synthesis: dict = field(default_factory=dict)
    intensity_profiles: dict = field(default_factory=dict)
    profile_jitter: dict = field(default_factory=dict)
    polarity: dict = field(default_factory=dict)
    normalisation_ensemble: dict = field(default_factory=dict)
    weight_average: dict = field(default_factory=dict)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: dict = field(default_factory=lambda: {"name": "cosine", "warmup_steps": 20})
    steps: int = 1000
    validate_every: int = 200
    checkpoint_every: int = 50
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    cpu_bfloat16: bool = False
    cpu_channels_last: bool = True
    threads: int = 0
    workers: int = 0  # processes that make the next steps' batches ahead (see batch_loader); 0: none
    bundle: dict = field(default_factory=dict)
    init: dict = field(default_factory=dict)
    pretrain: dict = field(default_factory=dict)
    source: str | None = None  # the config file, for provenance

    @property
    def label_info(self) -> list[LabelInfo]:
        if isinstance(self.labels, str):
            if self.labels not in LABEL_SETS:
                raise ConfigError(f"unknown label set {self.labels!r}; known: {sorted(LABEL_SETS)} or give a list.")
            return list(LABEL_SETS[self.labels])
        return [LabelInfo.from_dict(d) for d in self.labels]

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What must not change between a run and its resumption (the length may grow)."""
        d = self.to_dict()
        for key in ("steps", "validate_every", "checkpoint_every", "log_every", "device", "threads", "cpu_channels_last", "workers", "source",
                    "normalisation_ensemble"):
            d.pop(key)
        for key in ("pretrain", "intensity_profiles", "profile_jitter", "polarity", "cpu_bfloat16", "weight_average"):  # absent from configs older than the key: they still resume
            if not d[key]:
                d.pop(key)
        return d


def config_from_dict(raw: dict, base: Path | None = None) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}.")
    cfg = TrainConfig(**raw)
    if base is not None:
        cfg.datasets = [
            {**d, "path": str((base / d["path"]).resolve())} if isinstance(d, dict) else str((base / d).resolve())
            for d in cfg.datasets
        ]
        if cfg.init.get("bundle"):
            cfg.init = {**cfg.init, "bundle": str((base / cfg.init["bundle"]).resolve())}
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ConfigError("steps and batch_size must be at least 1.")
    if not isinstance(cfg.threads, int) or isinstance(cfg.threads, bool) or cfg.threads < 0:
        raise ConfigError(f"threads {cfg.threads!r}: give 0 (torch's own choice) or a positive number of CPU threads.")
    if not isinstance(cfg.cpu_bfloat16, bool):
        raise ConfigError(f"cpu_bfloat16 {cfg.cpu_bfloat16!r}: give true (bfloat16 autocast on a CPU that computes it) or false.")
    if not isinstance(cfg.cpu_channels_last, bool):
        raise ConfigError(f"cpu_channels_last {cfg.cpu_channels_last!r}: give true (channels-last convolutions on a CPU, faster) or false.")
    if not isinstance(cfg.workers, int) or isinstance(cfg.workers, bool) or cfg.workers < 0:
        raise ConfigError(f"workers {cfg.workers!r}: give 0 (batches made between steps) or a positive number of worker processes.")
    if len(cfg.patch_size) != 3 or len(cfg.spacing) != 3:
        raise ConfigError("patch_size and spacing need three values (x, y, z order for spacing; z, y, x for patch_size).")
    if not cfg.datasets and not cfg.phantoms:
        raise ConfigError("the config names no data: give \"datasets\" and/or \"phantoms\".")
    if cfg.init and (set(cfg.init) - {"bundle", "sha256"} or "bundle" not in cfg.init):
        raise ConfigError(f"\"init\" must be {{\"bundle\": PATH, \"sha256\": HEX}} (sha256 optional); got {cfg.init}.")
    network_members(cfg.network)
    _check_phantoms(cfg.phantoms)
    _check_synthesis(cfg.synthesis)
    profile_jitter_shares(cfg)
    polarity_shares(cfg)
    normalisation_ensemble(cfg)
    WeightAverage.from_config(cfg.weight_average, cfg.steps)
    if cfg.pretrain:
        from .pretraining import PretrainSpec

        PretrainSpec.from_config(cfg.pretrain)
    cfg.label_info  # noqa: B018  (validates the label set)
    return cfg


PHANTOM_COUNTS = ("ct", "mr", "validation", "seed")


def _check_phantoms(phantoms: dict) -> None:
    """The ``phantoms`` block: counts and seed are non-negative integers, ``thorax`` true, false or a list
    of modalities, ``anatomy`` 1 or 2."""
    if not isinstance(phantoms, dict):
        raise ConfigError(f"\"phantoms\" must be {{\"ct\": N, \"mr\": M, \"seed\": S}}; got {phantoms!r}.")
    unknown = sorted(set(phantoms) - {*PHANTOM_COUNTS, "thorax", "anatomy"})
    if unknown:
        raise ConfigError(f"\"phantoms\": unknown keys {unknown}; known: {[*PHANTOM_COUNTS, 'thorax', 'anatomy']}.")
    for key in PHANTOM_COUNTS:
        value = phantoms.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"\"phantoms\": {key} {value!r} must be a non-negative integer.")
    try:
        thorax_modalities(phantoms.get("thorax", False))
        anatomy_record(phantoms.get("anatomy", 1))
    except InputError as exc:
        raise ConfigError(f"\"phantoms\": {exc}") from None


def configured_profiles(cfg: TrainConfig) -> dict[str, ModalityProfile]:
    """The intensity profile of each of the run's modalities: the library's, with the recipe's
    ``intensity_profiles`` parameters in place of its own."""
    pinned = cfg.intensity_profiles
    if not isinstance(pinned, dict) or any(not isinstance(v, dict) for v in pinned.values()):
        raise ConfigError(f"\"intensity_profiles\" must be {{MODALITY: {{PARAMETER: value}}}}; got {pinned!r}.")
    try:
        trained = {p.name: p for p in (get_modality(m) for m in cfg.modalities)}
        names = {get_modality(m).name: params for m, params in pinned.items()}
        unused = sorted(set(names) - set(trained))
        if unused:
            raise ConfigError(f"\"intensity_profiles\" names {unused}, which the run does not train; "
                              f"its modalities are {cfg.modalities}.")
        return {name: with_params(profile, names.get(name, {})) for name, profile in trained.items()}
    except InputError as error:
        raise ConfigError(f"\"intensity_profiles\": {error}") from None


def _item_shares(cfg: TrainConfig, key: str, check) -> dict[str, float]:
    """Every modality's share (0 when unnamed) from the recipe block ``key``, read by ``check(block,
    modalities, profiles)``; an unknown modality name becomes a ConfigError naming the block."""
    profiles = configured_profiles(cfg)
    try:
        named = check(getattr(cfg, key), cfg.modalities, profiles)
    except InputError as error:
        raise ConfigError(f"\"{key}\": {error}") from None
    return {m: named.get(m, 0.0) for m in profiles}


def profile_jitter_shares(cfg: TrainConfig) -> dict[str, float]:
    """The share of each modality's training items whose profile bounds are jittered (0 when unnamed)."""
    return _item_shares(cfg, "profile_jitter", check_profile_jitter)


def polarity_shares(cfg: TrainConfig) -> dict[str, float]:
    """The share of each modality's training items shown as their negative (0 when unnamed)."""
    return _item_shares(cfg, "polarity", check_polarity)


def network_members(network: dict) -> int:
    """How many networks ``network`` trains together (its ``"members"``, 1 when absent); a count that is
    not a whole number of at least 1 is a :class:`ConfigError`."""
    members = network.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise ConfigError(f"network \"members\": {members!r}: give a whole number, 2 or more for an ensemble (1: one network).")
    return members


def normalisation_ensemble(cfg: TrainConfig) -> dict[str, tuple[float, ...]]:
    """The fractions each named modality is normalised at by the run's bundle and in-run validation
    (:func:`..data.profile_jitter.check_normalisation_ensemble`; absent modalities: one pass)."""
    try:
        return check_normalisation_ensemble(cfg.normalisation_ensemble, cfg.modalities, configured_profiles(cfg))
    except InputError as error:
        raise ConfigError(f"\"normalisation_ensemble\": {error}") from None


SYNTHESIS_SOURCES = ("datasets", "phantoms")
MIX_KINDS = ("real", "synthetic", "phantom", "real_maps", "textured")
# numbers of a synthesis block: key, whether a value is valid, what a valid value is
SYNTHESIS_NUMBERS = (
    ("ct_arterial_share", lambda v: 0.0 <= v <= 1.0, "a share between 0 and 1"),
    ("mr_random_share", lambda v: 0.0 <= v <= 1.0, "a share between 0 and 1"),
    ("scale", lambda v: 0.0 <= v < 1.0, "the largest relative change of size, at least 0 and below 1, e.g. 0.3"),
)


def _valid_gamma(spec: object) -> bool:
    """Whether ``spec`` is ``{"range": [low, high], "prob": p}`` (either key may be left out: the
    synthesiser's default stands in)."""
    if not isinstance(spec, dict) or set(spec) - {"range", "prob"}:
        return False
    low_high, prob = spec.get("range"), spec.get("prob")
    range_ok = low_high is None or (isinstance(low_high, list | tuple) and len(low_high) == 2
                                    and all(isinstance(v, int | float) for v in low_high) and 0 < low_high[0] <= low_high[1])
    return range_ok and (prob is None or (isinstance(prob, int | float) and 0.0 <= prob <= 1.0))


def _ct_like(name: str) -> bool:
    """Whether ``name`` is a registered CT-like modality, resolved as the samplers resolve it."""
    from ..data.synthesis import CT_LIKE

    try:
        return get_modality(name).name in CT_LIKE
    except InputError:
        return False  # an unknown modality is refused where the modalities are checked


def _check_synthesis(synthesis: dict) -> None:
    """One sentence for a malformed ``synthesis`` block (see :class:`TrainConfig`)."""
    if not synthesis:
        return
    from ..data.synthesis import (  # a recipe with synthesis trains with it anyway
        DEFAULT_GENERATOR,
        GENERATORS,
    )

    unknown = sorted(set(synthesis) - {"sources", "mix", "gamma", "generator", *(key for key, _, _ in SYNTHESIS_NUMBERS)})
    if synthesis.get("generator", DEFAULT_GENERATOR) not in GENERATORS or isinstance(synthesis.get("generator"), bool):
        unknown.append(f"generator {synthesis['generator']!r} (one of {list(GENERATORS)}; 2 for a new recipe)")
    for key, valid, meaning in SYNTHESIS_NUMBERS:
        value = synthesis.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not valid(value):
            unknown.append(f"{key} {value!r} ({meaning})")
    gamma = synthesis.get("gamma", {})
    for modality, spec in (gamma.items() if isinstance(gamma, dict) else [("gamma", gamma)]):
        if not _valid_gamma(spec):
            unknown.append(f"gamma of {modality}: {spec!r} (use {{\"range\": [low, high], \"prob\": p}} with "
                           "0 < low <= high and p between 0 and 1)")
    sources = synthesis.get("sources", list(SYNTHESIS_SOURCES))
    bad_sources = sorted(set(sources) - set(SYNTHESIS_SOURCES)) if isinstance(sources, list) else [sources]
    mix = synthesis.get("mix", {})
    bad_mix = [
        f"{m}: {shares}" for m, shares in (mix.items() if isinstance(mix, dict) else [("mix", mix)])
        if not isinstance(shares, dict) or set(shares) - set(MIX_KINDS)
        or any(not isinstance(v, int | float) or v < 0 for v in shares.values()) or not any(shares.values())
    ]
    bad_mix += [f"{m}: textured items are MR-like images drawn with a real CT's texture, not {m}"
                for m, shares in (mix.items() if isinstance(mix, dict) else []) if isinstance(shares, dict)
                and shares.get("textured") and _ct_like(str(m))]
    if unknown or bad_sources or bad_mix or not mix:
        raise ConfigError(
            f"\"synthesis\" must be {{\"sources\": a subset of {list(SYNTHESIS_SOURCES)}, \"mix\": {{MODALITY: "
            f"{{KIND: share}}}}}} with kinds among {list(MIX_KINDS)} and non-negative shares; "
            f"check {unknown or bad_sources or bad_mix or 'the missing mix'}."
        )


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file; see training/configs/ for examples.")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from exc
    raw.update(overrides or {})
    raw["source"] = str(path.resolve())
    return config_from_dict(raw, path.parent)
