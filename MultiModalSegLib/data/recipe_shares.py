"""Recipe blocks that give a share of a modality's training items: ``{"MR": 0.75}``."""

from __future__ import annotations

from ..errors import ConfigError
from ..modalities import ModalityProfile, get_modality


def modality_shares(block: object, key: str, modalities: list[str], profiles: dict[str, ModalityProfile], *,
                    zero: bool) -> dict[str, float]:
    """Recipe block ``key`` as ``{modality: share}``: a dict of modalities the run trains (any spelling
    :func:`..modalities.get_modality` knows) to numbers in [0, 1] (in (0, 1] unless ``zero``); one
    sentence for a malformed one."""
    interval = "[0, 1]" if zero else "(0, 1]"
    if not isinstance(block, dict):
        raise ConfigError(f"\"{key}\" must be {{MODALITY: share in {interval}}}; got {block!r}.")
    shares = {}
    for name, share in block.items():
        modality = get_modality(name).name
        if modality not in profiles:
            raise ConfigError(f"\"{key}\" names {modality}, which the run does not train; its modalities are {modalities}.")
        number = isinstance(share, int | float) and not isinstance(share, bool)
        if not number or not 0.0 <= share <= 1.0 or (share == 0.0 and not zero):
            raise ConfigError(f"\"{key}\": the share of {modality} is {share!r}; give a number in {interval}.")
        shares[modality] = float(share)
    return shares
