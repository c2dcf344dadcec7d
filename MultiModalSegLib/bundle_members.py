"""Ensemble bundles: the weights of several trained bundles of one architecture, averaged at inference.

An ensemble bundle is an ordinary bundle (one ``metadata.json``, one ``model.pt`` checked against one
``model_sha256``) whose metadata lists ``members`` (each member's name, version, weights' sha256, its own
training provenance and, for a fine-tuned member, its parent) and whose state dict holds member ``i``'s
weights under ``members.<i>.`` (each checked against its record on loading,
:func:`~MultiModalSegLib.bundle.check_members`); its inference network is a
:class:`~MultiModalSegLib.networks.member_ensemble.MemberEnsemble`, whose ``members`` module list gives
those keys. The members must
agree on everything that shapes the input and the output (method, network, modalities and their intensity
profiles, labels, voxel size, patch size, inference settings): the Segmenter prepares each window once for
all of them.

``training.datasets`` of an ensemble is the union of its members' records, so every scan any member
trained on counts as trained on (:func:`MultiModalSegLib.provenance.trained_case_names`); its other
training fields are the first member's.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .bundle import MEMBERS_PREFIX, Bundle, member_state, weights_sha256
from .errors import BundleError
from .modalities import recorded_profiles
from .networks.member_ensemble import member_count

SHARED_FIELDS = ("method", "network", "labels", "spacing", "patch_size", "inference")


def _profiles(metadata: dict) -> dict:
    """Per modality, what its normalisation does (a percentile profile's default foreground and curve
    filled in, so that a profile written before they were recorded equals one that names them)."""
    out = {}
    for name, p in recorded_profiles(metadata).items():
        extra = {"foreground": p.foreground, "log_compression": p.log_compression} if p.kind == "percentile" else {}
        out[name] = (p.kind, {**p.params, **extra})
    return out


def check_compatible(bundles: list[Bundle]) -> None:
    """Raise :class:`BundleError` naming the first member and field that differ from the first member's."""
    if len(bundles) < 2:
        raise BundleError(f"an ensemble needs at least two bundles, got {len(bundles)}; give two or more.")
    for bundle in bundles:
        if member_count(bundle.metadata) > 1:
            raise BundleError(f"{bundle.path} is itself an ensemble; give its members instead.")
    first = bundles[0]
    for other in bundles[1:]:
        for field in SHARED_FIELDS:
            if first.metadata.get(field, {}) != other.metadata.get(field, {}):
                raise BundleError(f"{other.path}: its {field} differs from {first.path}'s; an ensemble's members "
                                  "must share it (train them under one recipe's network and data settings).")
        if _profiles(first.metadata) != _profiles(other.metadata):
            raise BundleError(f"{other.path}: its modalities or intensity profiles differ from {first.path}'s; an "
                              "ensemble's members must normalise their inputs alike.")


def _union_datasets(bundles: list[Bundle]) -> list[dict]:
    """Every member's ``training.datasets`` records; one per (name, sha256), the case lists joined."""
    out: dict[tuple, dict] = {}
    for bundle in bundles:
        for record in bundle.metadata.get("training", {}).get("datasets", []):
            if not isinstance(record, dict):
                raise BundleError(f"{bundle.path}: its training.datasets records paths, not data set records; "
                                  "re-export it with this version before combining it.")
            key = (record.get("name"), record.get("sha256"))
            if key not in out:
                out[key] = copy.deepcopy(record)
                continue
            for split in ("training", "validation"):
                joined = out[key].get(split, []) + [c for c in record.get(split, []) if c not in out[key].get(split, [])]
                if joined:
                    out[key][split] = joined
    return list(out.values())


def combine_bundles(bundles: list[Bundle], *, name: str, version: str, description: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata and state dict of the ensemble of ``bundles`` (see the module doc); save them with
    :func:`~MultiModalSegLib.bundle.save_bundle`, which fills ``model_sha256``."""
    check_compatible(bundles)
    first = bundles[0].metadata
    metadata = {k: copy.deepcopy(v) for k, v in first.items() if k not in ("metrics", "model_sha256", "format_version", "parent")}
    metadata.update(name=name, version=version, description=description)
    metadata["training"] = {**copy.deepcopy(first.get("training", {})), "datasets": _union_datasets(bundles)}
    metadata["members"] = [member_record(b.name, b.metadata["version"], b.state_dict, b.metadata.get("training", {}),
                                         b.metadata.get("parent")) for b in bundles]
    state = {f"{MEMBERS_PREFIX}.{i}.{k}": v for i, b in enumerate(bundles) for k, v in b.state_dict.items()}
    return metadata, state


def member_record(name: str, version: str, weights: dict[str, torch.Tensor], training: dict,
                  parent: dict | None = None) -> dict:
    """One entry of an ensemble's ``members``: name, version, the sha256 of the member's own ``weights`` (what
    loading checks), its training provenance and, for a fine-tuned member, its parent."""
    return {"name": name, "version": version, "model_sha256": weights_sha256(weights), "training": copy.deepcopy(training),
            **({"parent": copy.deepcopy(parent)} if parent else {})}


def trained_member_records(metadata: dict, state: dict[str, torch.Tensor], count: int,
                           parents: list[dict] | None = None) -> list[dict]:
    """The ``members`` records of an ensemble trained as one network (a recipe's ``network.members``,
    :meth:`~MultiModalSegLib.methods.base.Method.train_as_ensemble`): member i is ``<name>-member-<i+1>`` of
    the ensemble's version, with the sha256 of its weights in ``state``, the ensemble's training provenance and,
    when fine-tuned, ``parents[i]`` (member i of the parent ensemble: its name, version and weights' sha256)."""
    return [member_record(f"{metadata['name']}-member-{i + 1}", metadata["version"], member_state(state, i),
                          metadata["training"], {k: parents[i][k] for k in ("name", "version", "model_sha256")} if parents else None)
            for i in range(count)]


def member_bundle(bundle: Bundle, index: int) -> Bundle:
    """Member ``index`` of an ensemble as a single-network :class:`Bundle` in memory: the ensemble's
    metadata (name, version, labels, inference) with that member's training provenance and weights. A
    single-network bundle is returned as it is for index 0."""
    count = member_count(bundle.metadata)
    if count == 1:
        if index != 0:
            raise BundleError(f"{bundle.path} holds one network; it has no member {index + 1}.")
        return bundle
    if not 0 <= index < count:
        raise BundleError(f"{bundle.path} has {count} members; it has no member {index + 1}.")
    state = member_state(bundle.state_dict, index)
    member = bundle.metadata["members"][index]
    metadata = {k: copy.deepcopy(v) for k, v in bundle.metadata.items() if k != "members"}
    metadata["training"] = copy.deepcopy(member["training"])
    metadata["model_sha256"] = member["model_sha256"]
    return Bundle(path=Path(bundle.path), metadata=metadata, state_dict=state)


def member_names(members: list[Bundle]) -> str:
    """``"NAME VERSION, NAME VERSION"``: the members as messages and descriptions name them."""
    return ", ".join(f"{b.name} {b.metadata['version']}" for b in members)


def write_ensemble(members: list[Bundle], out: str | Path, *, name: str, version: str, description: str | None = None,
                   overwrite: bool = False) -> Path:
    """Combine ``members`` (:func:`combine_bundles`) and save the ensemble bundle at ``out`` (a ``.zip`` or a
    folder, written atomically; an existing one only with ``overwrite``). ``description`` defaults to a
    sentence naming the members."""
    from .bundle import save_bundle

    text = description or f"An ensemble of {len(members)} networks, their class probabilities averaged: {member_names(members)}."
    metadata, state = combine_bundles(members, name=name, version=version, description=text)
    return save_bundle(out, metadata, state, overwrite=overwrite)
