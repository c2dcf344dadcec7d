"""The training engine: unpaired per-modality batches -> ``method.training_step`` -> AdamW.

Checkpoints every N steps (model, optimiser, scheduler, AMP scaler, torch RNG; the samplers are
stateless, see :mod:`..data.sampling`) allow an exact resume. A SIGINT/SIGTERM or a ``STOP`` file in
the run folder ends the run cleanly after the current step, writing a final checkpoint. A finished
run exports a bundle. Under ``torchrun`` the method trains behind DDP on shards of the global
batch and rank 0 alone writes files (see :mod:`.distributed`).
"""

from __future__ import annotations

import copy
import datetime
import inspect
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..bundle import file_sha256, save_bundle
from ..bundle_members import trained_member_records
from ..data.dataset import Case, labelled_subset, load_dataset
from ..data.loading import PreparedCase, prepare_case
from ..data.phantoms import drawing_record, write_phantom_dataset
from ..data.sampling import ModalitySampler, UnlabelledSampler
from ..data.synthesis import (
    MixedSampler,
    SynthSampler,
    prepare_source,
    recipe_generator,
    recipe_options,
    source_organ_ids,
)
from ..device import (
    autocast,
    cpu_bfloat16_native,
    cpu_channels_last,
    grad_scaler,
    load_scaler_state,
    resolve_device,
    use_amp,
)
from ..errors import ConfigError
from ..inference.sliding_window import BUNDLE_WINDOWS
from ..methods import build_method, get_method
from ..modalities import LEGACY_FOREGROUND, ModalityProfile, get_modality, with_params
from ..naming import derived_model_name
from ..networks.member_ensemble import MemberEnsemble
from ..provenance import config_record, dataset_file_record
from ..reporting import Reporter
from . import distributed
from .batch_loader import step_batches
from .checkpoint import load_checkpoint, save_checkpoint
from .config import (
    PHANTOM_COUNTS,
    TrainConfig,
    configured_profiles,
    network_members,
    normalisation_ensemble,
    polarity_shares,
    profile_jitter_shares,
)
from .progress import ProgressLog, format_seconds, read_progress
from .schedules import build_scheduler
from .validation import dice_both_ways, predict_cases
from .weight_average import WeightAverage

UNLABELLED_STREAM = 1000  # sampler stream ids of unlabelled cases: 1000 + the modality's index


@dataclass
class TrainResult:
    status: str  # "done" or "stopped"
    step: int
    bundle: Path | None
    last_losses: dict[str, float]
    validation: dict | None


class StopRequest:
    """Set by SIGINT/SIGTERM (when running in the main thread) or by a ``STOP`` file."""

    def __init__(self, stop_file: Path) -> None:
        self.stop_file = stop_file
        self.flag = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame) -> None:
        self.flag = True

    @property
    def requested(self) -> bool:
        return self.flag or self.stop_file.exists()


def build_configured_method(cfg: TrainConfig, modalities: list[str], labels: list) -> torch.nn.Module:
    """``cfg``'s method for ``modalities`` and ``labels`` (background added), with the label names
    passed to a method that takes them (e.g. text prompts per class); with ``network.members`` K, its
    network an ensemble of K."""
    params = dict(cfg.method_params)
    if "label_names" in inspect.signature(get_method(cfg.method)).parameters:
        params.setdefault("label_names", [lab.name for lab in labels])
    network = {k: v for k, v in cfg.network.items() if k != "members"}
    method = build_method(cfg.method, network, modalities, len(labels) + 1, **params)
    members = network_members(cfg.network)
    if members > 1:  # an ensemble trained as one network (Method.train_as_ensemble)
        method.train_as_ensemble(members)
    return method


def _model_remap(case: Case, dataset_labels: dict[int, str], model_values: dict[str, int]) -> dict[int, int] | None:
    """Compose the case's remap table with the dataset-label-name -> model-label-value map."""
    unknown = sorted({n for v, n in dataset_labels.items() if v != 0} - set(model_values))
    by_value = {v: model_values.get(n, 0) for v, n in dataset_labels.items() if v != 0}
    identity = not unknown and all(k == v for k, v in by_value.items())
    if case.label_remap is None:
        return None if identity else by_value
    return {src: by_value.get(dst, 0) for src, dst in case.label_remap.items()}


class Trainer:
    """Runs one configuration in ``out_dir`` (``checkpoints/``, ``progress.jsonl``, ``bundle/``)."""

    def __init__(
        self, config: TrainConfig, out_dir: str | Path, *, restart: bool = False, quiet: bool = False,
        init_state: Callable[[torch.nn.Module], torch.nn.Module | None] | None = None,
        reporter: Reporter | None = None,
        profiles: Mapping[str, ModalityProfile] | None = None,
    ) -> None:
        """``init_state(method)``, when given, runs once the method is built and before a resume: it loads
        starting weights (fine-tuning) and may return a replacement method (e.g. one with an added modality).
        ``reporter`` tells the person (or, with JSON lines, a program) the plan and the progress; default:
        text and bars on stderr, bars off when ``quiet``. ``profiles``: intensity profiles by modality
        that replace the library's (fine-tuning passes its parent's, so the parent's weights see the inputs
        they were trained on); the bundle and the checkpoint record the profiles used. A warm start
        (``init`` in the config) is a new run and uses the library's profiles."""
        self.cfg = config
        self.init_state = init_state
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.quiet = quiet
        # under torchrun: join the process group; rank 0 alone writes files (see .distributed)
        self.device = distributed.setup(resolve_device(config.device))
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.reporter = (reporter or Reporter(quiet=quiet)) if self.is_main else Reporter.silent()
        if restart and self.is_main:
            for p in (self.ckpt_path, self.out / "progress.jsonl"):
                p.unlink(missing_ok=True)
        distributed.barrier()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.labels = config.label_info
        self.modalities = [get_modality(m).name for m in config.modalities]
        # intensity profiles: the recipe's (the library's unless it pins some), except those given (a fine-tune
        # keeps its parent's normalisation)
        given = {get_modality(m).name: p for m, p in (profiles or {}).items()}
        configured = configured_profiles(config)
        self.profiles = {m: given.get(m) or configured[m] for m in self.modalities}
        self.jitter = profile_jitter_shares(config)  # share of each modality's items with jittered profile bounds
        self.polarity = polarity_shares(config)  # share of each modality's items shown as their negative
        self.normalisation_ensemble = normalisation_ensemble(config)  # the bundle's passes per modality (inference only)
        self._derived_name: str | None = None  # a manifest-named recipe's bundle name, once chosen (bundle_name_and_description)

    # ----- data
    def _cases(self) -> tuple[list[Case], list[Case], list[dict]]:
        """Training and validation cases of every data set, and each data set's provenance record."""
        entries = [d if isinstance(d, dict) else {"path": d} for d in self.cfg.datasets]
        if self.cfg.phantoms:
            ph = self.cfg.phantoms
            target = self.out / "phantoms" / "dataset.json"
            if not target.exists() and self.is_main:
                counts = int(ph.get("ct", 0)), int(ph.get("mr", 0))
                bar = self.reporter.bar(sum(counts), "writing phantoms")
                write_phantom_dataset(
                    target.parent, *counts, int(ph.get("seed", 0)), int(ph.get("validation", 0)), progress=lambda done, _total: bar.update(done),
                    thorax=ph.get("thorax", False), anatomy=ph.get("anatomy", 1),
                )
                bar.close()
            distributed.barrier()
            recipe = {k: int(ph.get(k, 0)) for k in PHANTOM_COUNTS} | drawing_record(ph)
            entries.append({"path": str(target), "origin": "phantom", "phantoms": recipe})
        model_values = {lab.name: lab.value for lab in self.labels}
        train, val = [], []
        for entry in entries:
            spec = load_dataset(entry["path"])
            weight = float(entry.get("weight", 1.0))
            excluded = set(entry.get("exclude", []))
            unknown = sorted(excluded - {c.name for cases in spec.splits.values() for c in cases})
            if unknown:
                raise ConfigError(f"{entry['path']}: \"exclude\" names cases it does not hold: {unknown}.")
            for split, into in (("training", train), ("validation", val)):
                for c in spec.cases(split):
                    if c.modality in self.modalities and c.name not in excluded:
                        remap = _model_remap(c, spec.labels, model_values)
                        into.append(Case(c.name, c.image, c.modality, c.label, remap, weight,
                                         origin=entry.get("origin", "real"), remap_is_table=c.label_remap is None))
        records = [
            dataset_file_record(e["path"], origin=e.get("origin", "real"), exclude=e.get("exclude", ()),
                                modalities=self.modalities, phantoms=e.get("phantoms"))  # fmt: skip
            for e in entries
        ]
        for modality, n in self.cfg.few_shot.items():
            modality = get_modality(modality).name
            mine = [c for c in train if c.modality == modality]
            kept = labelled_subset(mine, int(n), self.cfg.seed)
            train = [c for c in train if c.modality != modality] + kept
        return train, val, records

    def _prepare(self, cases: list[Case], labelled: bool = True, what: str = "reading training cases",
                 fractions: dict[str, tuple[float, ...]] | None = None) -> list[PreparedCase]:
        """The ``labelled`` (or unlabelled) ``cases`` in model space; ``fractions``: the normalisation
        ensemble's passes per modality (validation cases, predicted as the bundle will segment)."""
        values = [lab.value for lab in self.labels]
        mine = [c for c in cases if c.labelled == labelled]
        fractions = fractions or {}
        return self.reporter.each(mine, what, lambda c: prepare_case(c, self.cfg.spacing, values, self.profiles[c.modality],
                                                                     fractions.get(c.modality, (0.0,)))) if mine else []

    def _mixed_samplers(self, train: list[Case], prepared: list[PreparedCase]) -> dict[str, MixedSampler]:
        """Per modality, a :class:`MixedSampler` of its real cases, its phantoms and images synthesised
        from the label maps of the training cases whose origin ``synthesis["sources"]`` names (a mix's
        ``real_maps``: from the real sources' maps alone; ``textured``: the real CT sources' maps with
        their texture)."""
        cfg = self.cfg
        origins = {"datasets": "real", "phantoms": "phantom"}
        wanted = {origins[s] for s in cfg.synthesis.get("sources", list(origins))}
        values = [lab.value for lab in self.labels]
        labelled = [c for c in train if c.labelled]
        wanted_cases = [c for c in labelled if c.origin in wanted]
        organ_ids = source_organ_ids(recipe_generator(cfg.synthesis), self.labels)
        sources = self.reporter.each(wanted_cases, "reading label maps for synthesis",
                                     lambda c: prepare_source(c, cfg.spacing, values, self.profiles[c.modality], organ_ids))
        pairs = list(zip(labelled, prepared, strict=True))
        real = [s for c, s in zip(wanted_cases, sources, strict=True) if c.origin == "real"]
        synthesised = {"synthetic": sources, "real_maps": real, "textured": [s for s in real if s.hu is not None]}
        jitter = self.jitter
        samplers = {}
        for i, modality in enumerate(self.modalities):
            shares = cfg.synthesis["mix"].get(modality)
            if shares is None:
                raise ConfigError(f"\"synthesis\" has no mix for modality {modality}; add \"{modality}\": {{KIND: share}}.")
            kinds: dict[str, ModalitySampler] = {}
            for kind in ("real", "phantom"):
                mine = [p for c, p in pairs if c.origin == kind and c.modality == modality]
                if mine:
                    kinds[kind] = ModalitySampler(mine, cfg.patch_size, cfg.batch_size, cfg.foreground_ratio, cfg.augment, cfg.seed, i,
                                                  jitter[modality], self.polarity[modality])
            for kind, kind_sources in synthesised.items():
                if kind_sources and (kind == "synthetic" or shares.get(kind)):  # a kind of the mix only
                    kinds[kind] = SynthSampler(kind_sources, modality, cfg.patch_size, cfg.batch_size, cfg.spacing,
                                               cfg.foreground_ratio, cfg.seed, i, profile=self.profiles[modality],
                                               jitter=jitter[modality], polarity=self.polarity[modality],
                                               texture=kind == "textured", **recipe_options(cfg.synthesis, modality))
            samplers[modality] = MixedSampler(kinds, shares, cfg.batch_size, cfg.seed, i)
        return samplers

    def plan_text(self) -> str:
        """What the run will do, in a few lines (printed before the data is prepared)."""
        cfg = self.cfg
        data = ["/".join(Path(d["path"] if isinstance(d, dict) else d).parts[-2:]) for d in cfg.datasets]
        if cfg.phantoms:
            ph = cfg.phantoms
            made = "" if (self.out / "phantoms" / "dataset.json").exists() else ", written first"
            data.append(f"{ph.get('ct', 0)} CT + {ph.get('mr', 0)} MR phantoms (seed {ph.get('seed', 0)}{made})")
        steps = f"{cfg.steps} steps" + (", resuming from its checkpoint" if self.ckpt_path.exists() else "")
        return (
            f"training {cfg.bundle.get('name', cfg.name)}: method {cfg.method}, {steps}, batch {cfg.batch_size} per "
            f"modality ({', '.join(self.modalities)}), patch {'x'.join(map(str, cfg.patch_size))} at "
            f"{'x'.join(f'{s:g}' for s in cfg.spacing)} mm, on {self.device}\n"
            f"  data: {'; '.join(data)}\n  run folder: {self.out} (progress.jsonl, checkpoints; a STOP file or Ctrl-C "
            "stops it, the same command resumes)"
        )

    def build(self) -> None:
        cfg = self.cfg
        distributed.check_batch_size(cfg.batch_size, self.world)
        self.reporter.plan(self.plan_text(), name=cfg.bundle.get("name", cfg.name), method=cfg.method, steps=cfg.steps,
                           run=str(self.out))  # fmt: skip
        train, val, self.dataset_records = self._cases()
        prepared = self._prepare(train)
        self.val_cases = self._prepare(val, what="reading validation cases", fractions=self.normalisation_ensemble)
        self.samplers = self._mixed_samplers(train, prepared) if cfg.synthesis else {}
        for i, modality in enumerate(self.modalities if not cfg.synthesis else []):
            mine = [p for p in prepared if p.modality == modality]
            if not mine:
                raise ConfigError(f"no labelled training case of modality {modality}; add data or remove it from \"modalities\".")
            self.samplers[modality] = ModalitySampler(
                mine, cfg.patch_size, cfg.batch_size, cfg.foreground_ratio, cfg.augment, cfg.seed, stream=i,
                jitter=self.jitter[modality], polarity=self.polarity[modality],
            )
        # semi-supervised methods also get each modality's unlabelled cases (few_shot's surplus included)
        self.unlabelled_samplers = {}
        if getattr(get_method(cfg.method), "uses_unlabelled", False):
            unlabelled = self._prepare(train, labelled=False, what="reading unlabelled cases")
            for i, modality in enumerate(self.modalities):
                mine = [p for p in unlabelled if p.modality == modality]
                if mine:
                    self.unlabelled_samplers[f"{modality}:unlabelled"] = UnlabelledSampler(
                        mine, cfg.patch_size, cfg.batch_size, cfg.augment, cfg.seed, stream=UNLABELLED_STREAM + i
                    )
        self.case_counts = {m: len(s.cases) for m, s in {**self.samplers, **self.unlabelled_samplers}.items()}
        torch.manual_seed(cfg.seed)
        self.method = build_configured_method(cfg, self.modalities, self.labels).to(self.device)
        if cfg.weight_average:
            WeightAverage.check_network(self.method.inference_network())
        if self.init_state is not None:  # start from given weights (fine-tuning); a checkpoint still wins
            self.method = (self.init_state(self.method) or self.method).to(self.device)
        # warm start from another bundle's weights (logged at the run's first start); a checkpoint still wins
        self.warm_start = self._warm_start() if self.init_state is None and self.cfg.init else None
        # self-supervised pretraining of the network (a fresh run only: a checkpoint holds its result)
        self.pretrained = self._pretrain() if cfg.pretrain and not self.ckpt_path.exists() else None
        # the layout the convolutions compute in (before the optimiser, whose state follows each parameter's)
        self.memory_format = "channels_last" if cfg.cpu_channels_last and cpu_channels_last(self.method, self.device) else "contiguous"
        # per-parameter learning rates when the method asks for them (Method.lr_scales, e.g. a fine-tune that adds a modality)
        groups = self.method.parameter_groups(cfg.lr) if hasattr(self.method, "parameter_groups") else self.method.parameters()
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, cfg.steps, cfg.schedule)
        self.scaler = grad_scaler(self.device, cfg.amp)
        self.step = 0
        self.history: list[dict] = []
        self.weight_average = WeightAverage.from_config(cfg.weight_average, cfg.steps)
        if self.ckpt_path.exists():
            self._resume()
        self.ddp = None  # the method behind DistributedDataParallel, made at the first step under torchrun
        if distributed.any_rank(self.step != distributed.broadcast_int(self.step, self.device), self.device):
            raise ConfigError(f"the ranks resumed from different steps; put {self.out} on a file system that every node shares.")

    def _state(self) -> dict:
        return {
            "step": self.step,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "identity": self._identity(),
            **({"weight_average": self.weight_average.state_dict()} if self.weight_average else {}),
        }

    def _identity(self) -> str:
        """The configuration's identity and the intensity profiles the run normalises with: a library
        whose default profile changed must not resume a run begun with the former one."""
        return repr([*sorted(self.cfg.identity().items()), ("intensity_profiles", self._profile_params())])

    def _profile_params(self) -> dict:
        return {m: self.profiles[m].to_dict()["params"] for m in self.modalities}

    def _identities_before_the_pin(self) -> set[str]:
        """Identities of this same run as written before its recipe pinned ``intensity_profiles``: a pin
        that names the profiles a run normalised with records the recipe, it does not change it. So the
        identity without the pin is accepted with the profiles it records (they must be the pinned ones),
        and, for a checkpoint from before runs recorded their profiles, when the pinned profiles are the
        ones the library then used (MR percentiles over the voxels above the mean, ``LEGACY_FOREGROUND``)."""
        if not self.cfg.intensity_profiles:
            return set()
        unpinned = sorted((k, v) for k, v in self.cfg.identity().items() if k != "intensity_profiles")
        profiles = self._profile_params()
        accepted = {repr([*unpinned, ("intensity_profiles", profiles)])}
        if profiles == _profiles_before_recording(self.modalities):
            accepted.add(repr(unpinned))
        return accepted

    def _resume(self) -> None:
        state = load_checkpoint(self.ckpt_path)
        stored = state.get("identity")
        if stored != self._identity() and stored not in self._identities_before_the_pin():
            if stored == repr(sorted(self.cfg.identity().items())):
                raise ConfigError(
                    f"{self.ckpt_path} was written before runs recorded their intensity profiles, and the MR profile "
                    "has changed since (percentiles of all voxels, not of those above the mean): resuming would "
                    "change the run halfway. Start it again with --restart, or finish it with the version that began it."
                )
            raise ConfigError(
                f"{self.ckpt_path} was written by a different configuration; use another output folder or --restart."
            )
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler_resumed = load_scaler_state(self.scaler, state["scaler"])  # False: begun where AMP was off
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        if self.weight_average and "weight_average" in state:
            self.weight_average.load_state_dict(state["weight_average"])

    def checkpoint(self) -> None:
        if self.is_main:
            save_checkpoint(self._state(), self.ckpt_path)

    # ----- one step
    def batches(self, step: int, rank: int = 0, world: int = 1) -> dict[str, dict[str, torch.Tensor]]:
        """The batches of ``step`` on the CPU, keyed by modality (a function of the seed and the step);
        for a method with ``uses_unlabelled``, also ``"<modality>:unlabelled"`` batches (images only).
        With ``world`` > 1: only items ``rank::world`` of each (a DDP rank's share)."""
        positions = None if world == 1 else range(rank, self.cfg.batch_size, world)
        return {m: s.batch(step, positions) for m, s in {**self.samplers, **getattr(self, "unlabelled_samplers", {})}.items()}

    def step_batches(self, step: int) -> dict[str, dict[str, torch.Tensor]]:
        """This process's batches of ``step`` (under DDP: this rank's share)."""
        return self.batches(step) if self.world == 1 else self.batches(step, self.rank, self.world)

    def train_step(self, local: dict[str, dict[str, torch.Tensor]] | None = None) -> dict[str, float]:
        """One optimiser step on one batch per modality (step ``self.step``; ``local``: its batches
        when already made, see :mod:`.batch_loader`); returns the losses."""
        local = self.step_batches(self.step) if local is None else local
        batches = {key: {k: v.to(self.device, non_blocking=True) for k, v in batch.items()} for key, batch in local.items()}
        self.method.train()
        self.method.set_progress(self.step, self.cfg.steps)
        # a method with ``alternating`` (MulModSeg's Algorithm 1) gets one optimiser step per batch,
        # in the order of ``batches`` (CT, then MR); the others one step on all batches together
        groups = [{key: batch} for key, batch in batches.items()] if self.method.alternating else [batches]
        if self.world > 1 and getattr(self, "ddp", None) is None:
            self.ddp = self._wrap_ddp(groups)
        losses: dict[str, float] = {}
        for group in groups:
            for key, value in self._optimiser_step(group).items():
                losses[key] = losses.get(key, 0.0) + value
        self.scheduler.step()
        self.step += 1
        return distributed.mean_over_ranks(losses, self.device)

    def _wrap_ddp(self, groups: list[dict[str, dict[str, torch.Tensor]]]) -> torch.nn.Module:
        """The method behind DDP, with ``find_unused_parameters`` only when this step's ``groups``
        leave a trainable parameter without a gradient on some rank."""
        self.find_unused_parameters = distributed.any_rank(bool(self.unused_parameters(groups)), self.device)
        return distributed.wrap(self.method, self.device, self.find_unused_parameters)

    def unused_parameters(self, groups: list[dict[str, dict[str, torch.Tensor]]]) -> set[str]:
        """Trainable parameters that a forward/backward of each of ``groups`` leaves without a
        gradient. The probe's effects (gradients, BatchNorm statistics, random numbers) are undone."""
        saved = {k: v.detach().clone() for k, v in self.method.state_dict().items()}
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        unused: set[str] = set()
        for group in groups:
            self.method.zero_grad(set_to_none=True)
            with autocast(self.device, self.cfg.amp, cpu_bfloat16=self.cfg.cpu_bfloat16):
                loss = self.method.training_step(group)["loss"]
            loss.backward()
            unused |= {n for n, p in self.method.named_parameters() if p.requires_grad and p.grad is None}
        self.method.zero_grad(set_to_none=True)
        self.method.load_state_dict(saved)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        return unused

    def _optimiser_step(self, batches: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
        """Forward ``batches`` through the method, backward, one optimiser step; returns the losses."""
        self.optimizer.zero_grad(set_to_none=True)
        forward = self.ddp if getattr(self, "ddp", None) is not None else self.method.training_step
        with autocast(self.device, self.cfg.amp, cpu_bfloat16=self.cfg.cpu_bfloat16):
            losses = forward(batches)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise ConfigError(f"the loss became {float(loss)} at step {self.step}; lower the learning rate (now {self.cfg.lr}).")
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _pretrain(self) -> dict:
        from .pretraining import PretrainSpec, pretrain_network

        spec = PretrainSpec.from_config(self.cfg.pretrain)
        network = self.method.pretraining_network()
        return pretrain_network(network, self.batches, spec, self.device, self.cfg.amp, self.cfg.seed)

    def _warm_start(self) -> dict:
        from ..bundle import bundle_sha256, load_bundle
        from ..bundle_members import member_bundle
        from ..networks.member_ensemble import member_count
        from .warm_start import warm_start, warm_start_method

        path = Path(self.cfg.init["bundle"])
        bundle = load_bundle(path, expected_sha256=self.cfg.init.get("sha256"))  # hashes the file when a sha256 is given
        members = member_count(bundle.metadata)
        sha256 = self.cfg.init.get("sha256") or bundle_sha256(path)
        net = self.method.inference_network()
        if isinstance(net, MemberEnsemble):  # an ensemble recipe (network.members): member i from member i
            if members != len(net.members):
                raise ConfigError(f"init {path}: it holds {members} network(s) and the recipe trains an ensemble of "
                                  f"{len(net.members)}; start an ensemble from an ensemble bundle of as many members "
                                  "(members started alike get alike gradients and stay alike).")
            reports = [warm_start(m, member_bundle(bundle, i).state_dict, f"member {i + 1} of the init bundle {path}")
                       for i, m in enumerate(net.members)]
            record = {"members": members}
        else:
            source = member_bundle(bundle, 0)  # an ensemble bundle: its first member's weights
            reports = [warm_start_method(self.method, source.state_dict, f"the init bundle {path}")]
            record = {"member": 1, "members": members} if members > 1 else {}
        self.method.to(self.device)
        return {"bundle": str(path), "method": bundle.method, "sha256": sha256, **record,
                **{k: sum(len(getattr(r, k)) for r in reports) for k in ("copied", "averaged", "fresh")}}

    # ----- the loop
    def run(self) -> TrainResult:
        if not hasattr(self, "method"):
            self.build()
        cfg = self.cfg
        log = ProgressLog(self.out / "progress.jsonl") if self.is_main else _NullLog()
        bar = self.reporter.bar(cfg.steps, "training", every=cfg.log_every, start=self.step)
        stop_file = self.out / "STOP"
        if self.is_main:
            stop_file.unlink(missing_ok=True)
        distributed.barrier()
        if self.warm_start and self.step == 0:
            log.write("warm_start", **self.warm_start)
        if getattr(self, "pretrained", None) and self.step == 0:
            log.write("pretrain", **self.pretrained)
        before = self.precision_before() if self.is_main and 0 < self.step < cfg.steps else None  # steps left to compute
        if before:
            self.reporter.note(
                f"{self.out}: this run's last session computed in {before}; this one computes in {self.precision} "
                f"(here {self._precision_reason()}), so its steps from {self.step} on differ in precision from those "
                f"before. To keep the run in one precision, stop it (Ctrl-C) and resume it where it computes in {before}.",
                precision=self.precision, precision_before=before)
        log.write(
            "start", step=self.step, steps=cfg.steps, cases=self.case_counts, device=str(self.device), method=cfg.method, processes=self.world,
            precision=self.precision, memory_format=self.memory_format, **({"precision_before": before} if before else {}),
            **({"amp_scaler": "new (the checkpoint was written with AMP off)"} if getattr(self, "scaler_resumed", True) is False else {}),
        )
        start_step, t0 = self.step, time.time()
        losses: dict[str, float] = {}
        val = val_average = None
        status = "done"
        with StopRequest(stop_file) as stop, step_batches(self.step_batches, self.step, cfg.steps, cfg.workers) as source:
            while self.step < cfg.steps:
                losses = self.train_step(next(source))
                if self.weight_average and self.weight_average.due(self.step):
                    self.weight_average.update(self.method.inference_network().state_dict())
                elapsed = time.time() - t0
                eta = elapsed / (self.step - start_step) * (cfg.steps - self.step)
                lr = self.optimizer.param_groups[0]["lr"]
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    log.write("step", step=self.step, steps=cfg.steps, losses=losses, lr=lr, elapsed_s=round(elapsed, 2), eta_s=round(eta, 1))
                bar.update(self.step, f"loss {losses['loss']:.4f} lr {lr:.2e} eta {format_seconds(eta)}",
                           loss=round(losses["loss"], 5), lr=lr, eta_s=round(eta, 1))  # fmt: skip
                if self.is_main and self.val_cases and (self.step % cfg.validate_every == 0 or self.step == cfg.steps):
                    preds = predict_cases(self.method.inference_network(), self.val_cases, cfg.patch_size, self.device,
                                          cfg.amp, polarity_ensemble=self.polarity_ensemble)
                    scores = dice_both_ways(preds, self.val_cases, self.labels, cfg.spacing)
                    val = scores["dice"]
                    if self.weight_average and self.weight_average.count:
                        scores["weight_average"] = {"count": self.weight_average.count, **self._validate_average()}
                        val_average = scores["weight_average"]["dice"]
                    log.write("validation", step=self.step, cases=[c.name for c in self.val_cases],
                              overlap=BUNDLE_WINDOWS["overlap"], **scores)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.checkpoint()
                    log.write("checkpoint", step=self.step, path=str(self.ckpt_path))
                # every rank stops after the same step when any rank got a signal or sees the STOP file
                if distributed.any_rank(stop.requested, self.device) and self.step < cfg.steps:
                    self.checkpoint()
                    log.write("stopped", step=self.step, path=str(self.ckpt_path))
                    status = "stopped"
                    break
        bar.close()
        bundle = None
        if status == "done":
            finished = self.out / "bundle" / "metadata.json"
            if start_step == cfg.steps and finished.is_file():
                bundle = self.out / "bundle"  # a finished run rerun: its bundle (and metrics) stay as they are
            elif self.is_main:
                if start_step == cfg.steps:  # a finished run whose bundle was removed: exported with its last scores
                    val, val_average = self._last_validation()
                bundle = self.export(val, time.time() - t0, val_average)
            distributed.barrier()  # the other ranks return once rank 0 has written the bundle
            bundle = bundle or self.out / "bundle"
            name = json.loads((bundle / "metadata.json").read_text())["name"] if (bundle / "metadata.json").is_file() else None
            log.write("done", step=self.step, bundle=str(bundle), **({"name": name} if name else {}))
        log.close()
        # the scores of the weights the bundle carries: with weight_average, their mean's
        return TrainResult(status, self.step, bundle, losses, val_average if val_average is not None else val)

    # ----- packaging
    def bundle_name_and_description(self) -> tuple[str, str]:
        """The config's name and description, unless a models-manifest model has that name: then a
        name of its own (:func:`~MultiModalSegLib.naming.derived_model_name`) and a description saying
        what it is, so that a run of a shipped model's recipe is never taken for the shipped model; the
        ``done`` event records it, and a finished run exported again keeps it."""
        b = self.cfg.bundle
        name = b.get("name", self.cfg.name)
        description = b.get("description", f"{self.cfg.method} model trained by mmseg train")
        if self._derived_name is None:
            earlier = [r["name"] for r in read_progress(self.out / "progress.jsonl") if r.get("event") == "done"
                       and r.get("step") == self.step and str(r.get("name", "")).startswith(f"{name}-")]
            # a finished run exported again (its bundle removed) keeps the derived name its first export had
            self._derived_name = earlier[0] if earlier else derived_model_name(name, "trained")
        new = self._derived_name
        if new != name:
            description = (f"{self.cfg.method} model trained by mmseg train ({self.step} steps) from the recipe of "
                           f"{name}; not the model {name} of the models manifest")  # fmt: skip
        return new, description

    @property
    def precision(self) -> str:
        """What the training steps compute in here: float16 under CUDA AMP, bfloat16 under CPU autocast
        (``cpu_bfloat16`` on a processor that computes it natively), else float32."""
        if use_amp(self.device, self.cfg.amp):
            return "float16 (CUDA AMP)"
        if self.cfg.cpu_bfloat16 and self.device.type == "cpu" and cpu_bfloat16_native():
            return "bfloat16 (CPU autocast)"
        return "float32"

    def precision_before(self) -> str | None:
        """The precision the run's last session computed in, where it differs from this session's (a run
        begun in bfloat16 on a processor that computes it, resumed on one that does not; begun on a CPU,
        resumed on a GPU); None where they agree or the log has no session."""
        starts = [r for r in read_progress(self.out / "progress.jsonl") if r["event"] == "start"]
        before = starts[-1].get("precision", "float32") if starts else None
        return before if before and before != self.precision else None

    def _precision_reason(self) -> str:
        """Why this session computes in what it does, for the note on a change of precision."""
        if use_amp(self.device, self.cfg.amp):
            return "a CUDA GPU with AMP on"
        if self.device.type == "cpu" and self.cfg.cpu_bfloat16 and not cpu_bfloat16_native():
            return "a processor without bfloat16 in hardware (AVX512-BF16 or AMX), which emulates it more slowly than float32"
        return f"{self.device} without mixed precision"

    @property
    def polarity_ensemble(self) -> list[str]:
        """The modalities whose images and negatives are averaged at inference (those trained with both)."""
        return [m for m in self.modalities if self.polarity.get(m, 0.0) > 0.0]

    def metadata(self, validation: dict | None, seconds: float) -> dict:
        cfg = self.cfg
        b = cfg.bundle
        name, description = self.bundle_name_and_description()
        return {
            "name": name,
            "version": b.get("version", "0.1.0"),
            "description": description,
            "method": cfg.method,
            "network": self.method.network_spec,
            "modalities": {m: self.profiles[m].to_dict() for m in self.modalities},
            "labels": [lab.to_dict() for lab in self.labels],
            "spacing": [float(s) for s in cfg.spacing],
            "patch_size": [int(p) for p in cfg.patch_size],
            "inference": {**BUNDLE_WINDOWS,
                          **({"polarity_ensemble": self.polarity_ensemble} if self.polarity_ensemble else {}),
                          **({"normalisation_ensemble": {m: list(f) for m, f in self.normalisation_ensemble.items()}}
                             if self.normalisation_ensemble else {})},
            "training": {
                "datasets": self.dataset_records,
                "cases": self.case_counts,
                "steps": self.step,
                "seed": cfg.seed,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "config": self._config_record(),
                **self._config_file_record(),
                "seconds_this_run": round(seconds, 1),
                "device": str(self.device),
                "library_version": __version__,
            },
            "metrics": {"validation_dice": validation} if validation else {},
            "licence": b.get("licence", "Apache-2.0"),
            "authors": b.get("authors", ["MultiModalSeg contributors"]),
        }

    def _config_record(self) -> dict:
        record = config_record(self.cfg.to_dict(), self.dataset_records)
        if getattr(self, "warm_start", None):  # the warm start's bundle by the sha256 it was loaded with
            record["init"] = {**record["init"], "sha256": self.warm_start["sha256"]}
        return record

    def _config_file_record(self) -> dict:
        """The recipe file by name and sha256 (its path stays on the builder's machine)."""
        source = Path(self.cfg.source) if self.cfg.source else None
        if source is None or not source.is_file():
            return {"config_file": None}
        return {"config_file": source.name, "config_sha256": file_sha256(source)}

    def export(self, validation: dict | None, seconds: float, validation_average: dict | None = None) -> Path:
        """``bundle/``: the network's weights, or with ``weight_average`` their mean (``validation_average``
        its last in-run scores), the last step's weights then going to ``bundle_last_step/`` beside it."""
        net = self.method.inference_network()
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        meta = self.metadata(validation, seconds)
        meta["metrics"] = _finite(meta["metrics"])
        members = len(net.members) if isinstance(net, MemberEnsemble) else 1

        def save(folder: str, metadata: dict, weights: dict) -> Path:
            if members > 1:  # an ensemble trained as one network: a record per member, for its weights
                metadata = dict(metadata, members=trained_member_records(metadata, weights, members))
            return save_bundle(self.out / folder, metadata, weights, overwrite=True)

        if not (self.weight_average and self.weight_average.count):
            return save("bundle", meta, state)
        last = dict(meta, name=f"{meta['name']}-last-step",  # a name of its own: reports tell the two apart
                    description=f"{meta['description']} The last step's weights; the run's bundle holds their mean.",
                    training={**meta["training"], "weights": "the last step's"})
        save("bundle_last_step", last, state)
        average = dict(meta, metrics=_finite({"validation_dice": validation_average} if validation_average else {}),
                       training={**meta["training"], "weights": "the mean over the steps of weight_average",
                                 "weight_average": self.weight_average.record()})
        return save("bundle", average, self.weight_average.averaged(state))

    def _last_validation(self) -> tuple[dict | None, dict | None]:
        """The scores of the run's validation at its last step (and of its averaged weights), from the progress log."""
        checks = [r for r in read_progress(self.out / "progress.jsonl")
                  if r.get("event") == "validation" and r.get("step") == self.step]  # fmt: skip
        if not checks:
            return None, None
        return checks[-1].get("dice"), (checks[-1].get("weight_average") or {}).get("dice")

    def _validate_average(self) -> dict:
        """The in-run validation of the averaged weights, scored both ways (a copy of the network holds them)."""
        net = copy.deepcopy(self.method.inference_network())
        net.load_state_dict(self.weight_average.averaged(net.state_dict()))
        preds = predict_cases(net, self.val_cases, self.cfg.patch_size, self.device, self.cfg.amp,
                              polarity_ensemble=self.polarity_ensemble)
        return dice_both_ways(preds, self.val_cases, self.labels, self.cfg.spacing)


def _profiles_before_recording(modalities: list[str]) -> dict:
    """The profile parameters the library normalised ``modalities`` with before runs recorded their
    profiles: today's, except that percentile profiles took their percentiles over the voxels above the
    image mean (the one change made since; see ``Trainer._resume``)."""
    former = {}
    for m in modalities:
        profile = get_modality(m)
        if profile.kind == "percentile":
            profile = with_params(profile, {"foreground": LEGACY_FOREGROUND})
        former[m] = profile.to_dict()["params"]
    return former


def _finite(obj):
    """Replace NaN by None so that metadata stays valid JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class _NullLog:
    """The progress log of ranks other than 0: they write nothing."""

    def write(self, event: str, **fields) -> dict:
        return {"event": event, **fields}

    def close(self) -> None:
        pass
