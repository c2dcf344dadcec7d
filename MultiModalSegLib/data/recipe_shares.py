"""Recipe blocks that give a share of a modality's training items: ``{"MR": 0.75}``."""

from __future__ import annotations

from ..errors import ConfigError
from ..modalities import ModalityProfile, get_modality


def modality_entries(block: object, key: str, modalities: list[str], profiles: dict[str, ModalityProfile],
                     form: str) -> list[tuple[str, object]]:
    """Recipe block ``key`` as ``(modality, value)`` pairs: a dict of modalities the run trains (any spelling
    :func:`..modalities.get_modality` knows, returned by their profile names); ``form`` says what a well-formed
    block looks like in the sentence that refuses another."""
    if not isinstance(block, dict):
        raise ConfigError(f"\"{key}\" must be {form}; got {block!r}.")
    entries = []
    for name, value in block.items():
        modality = get_modality(name).name
        if modality not in profiles:
            raise ConfigError(f"\"{key}\" names {modality}, which the run does not train; its modalities are {modalities}.")
        entries.append((modality, value))
    return entries


def modality_shares(block: object, key: str, modalities: list[str], profiles: dict[str, ModalityProfile], *,
                    zero: bool) -> dict[str, float]:
    """Recipe block ``key`` as ``{modality: share}``: :func:`modality_entries` whose values are numbers in
    [0, 1] (in (0, 1] unless ``zero``); one sentence for a malformed one."""
    interval = "[0, 1]" if zero else "(0, 1]"
    shares = {}
    for modality, share in modality_entries(block, key, modalities, profiles, f"{{MODALITY: share in {interval}}}"):
        number = isinstance(share, int | float) and not isinstance(share, bool)
        if not number or not 0.0 <= share <= 1.0 or (share == 0.0 and not zero):
            raise ConfigError(f"\"{key}\": the share of {modality} is {share!r}; give a number in {interval}.")
        shares[modality] = float(share)
    return shares
