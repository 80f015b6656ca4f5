import json
import textwrap

import numpy as np
import pytest
import torch

from musiclime import AudioFactorization, LyricsFactorization, MusicLIME
from musiclime.models import (
    BagOfWordsEncoder,
    LateFusionClassifier,
    LogMelCNN,
    TransformerLyricsEncoder,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from tests.toys import planted_stems

SR = 16000


def light_model(modality="both"):
    torch.manual_seed(0)
    return LateFusionClassifier(LogMelCNN(SR, channels=(8, 16), emb_dim=16), BagOfWordsEncoder(256, 8),
                                ["a", "b", "c"], SR, modality)


def inputs(b=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, SR * 2, generator=g) * 0.1, ["fire in the night", "", "love love love"][:b]


def test_checkpoint_roundtrip_is_exact(tmp_path):
    m = light_model()
    save_checkpoint(m, tmp_path / "ckpt", task="genre")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    back = load_checkpoint(tmp_path / "ckpt")
    a, t = inputs()
    np.testing.assert_array_equal(m.predict_proba(a, t).numpy(), back.predict_proba(a, t).numpy())
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["classes"] == ["a", "b", "c"] and cfg["sample_rate"] == SR and cfg["task"] == "genre"
    assert {"torch", "transformers", "musiclime"} <= set(cfg["versions"])
    assert back.model_id and load_model(str(tmp_path / "ckpt")).model_id == back.model_id


class _Trap:
    """Unpickling this writes a marker file: proof that a pickle was opened."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["training_args.bin", "pytorch_model.bin", "extra/state.pkl"])
def test_checkpoint_files_beside_the_weights_are_never_opened(tmp_path, name):
    import pickle
    ckpt = tmp_path / "ckpt"
    save_checkpoint(light_model(), ckpt)
    p = ckpt / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(pickle.dumps(_Trap(tmp_path / "opened")))
    a, t = inputs()
    assert load_model(str(ckpt)).predict_proba(a, t).shape == (3, 3)
    assert not (tmp_path / "opened").exists()


def test_checkpoint_without_safetensors_is_refused(tmp_path):
    save_checkpoint(light_model(), tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_model(str(tmp_path))


def test_unimodal_variants_never_run_the_other_encoder():
    a, t = inputs()
    audio_only = light_model("audio")
    assert audio_only.embed_lyrics(t).shape == (3, 0)
    p1 = audio_only.predict_proba(a, t)
    p2 = audio_only.predict_proba(a, ["x", "y", "z"])
    torch.testing.assert_close(p1, p2)
    lyrics_only = light_model("lyrics")
    torch.testing.assert_close(lyrics_only.predict_proba(a, t), lyrics_only.predict_proba(a * 0, t))


def test_late_fusion_model_explained_through_the_protocol():
    m = light_model()
    af = AudioFactorization(planted_stems(sr=SR, seconds=2), SR)
    lf = LyricsFactorization("fire in the night fire")
    exp = MusicLIME(num_samples=100, seed=0).explain(m, af, lf, top_labels=1)
    assert len(exp.as_list(exp.top_labels[0])) == 40 + 4


PLUGIN = textwrap.dedent('''
    import torch
    class Loudness:
        classes = ["quiet", "loud"]
        sample_rate = 16000
        def predict_proba(self, audio, lyrics):
            e = audio.pow(2).mean(1).clamp(max=1.0)
            return torch.stack([1 - e, e], 1)
    def make():
        return Loudness()
''')


def test_plugin_model_by_module_factory(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("my_plugin:make")
    af = AudioFactorization(planted_stems(sr=SR, seconds=2), SR)
    exp = MusicLIME(num_samples=200, seed=0).explain(model, af, LyricsFactorization("la la"), labels=[1])
    assert exp.as_list(1)[0][1] == "drums@3"  # the loudest stem-segment
    with pytest.raises(ValueError, match="plugin"):
        load_model("my_plugin:nothing_here")
    with pytest.raises(ValueError, match="hf:ORG/NAME"):  # the message lists every form
        load_model("no-such-thing")


def test_default_spec_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICLIME_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make demo"):
        load_model("default")


# ------------------------------------------------ tokenized lyrics straight from word masks

LYRICS = ["The fire burns and we run through the night, the night is ours",
          "don't stop me now, I'm having such a good time",
          "Ünïcödé café déjà vu; naïve résumé",
          "rock'n'roll 4ever and 2night!!! (yeah-yeah)",
          "the  spaces   stay\nand new lines too"]


@pytest.fixture(scope="module")
def minilm():
    return TransformerLyricsEncoder()


def test_minilm_loads_offline_and_embeds(minilm):
    e = minilm(["fire", "water", "fire"])
    assert e.shape == (3, 384)
    torch.testing.assert_close(e[0], e[2])
    assert float(e[0] @ e[1]) < 0.99


@pytest.mark.parametrize("text", LYRICS)
def test_mask_tokenization_matches_retokenizing(minilm, text):
    """For WordPiece (MiniLM/BERT) the mask path equals re-tokenizing the perturbed string:
    BERT splits on whitespace and punctuation, which lime's \\W+ separators always are."""
    lf = LyricsFactorization(text)
    masks = np.random.default_rng(0).integers(0, 2, size=(12, lf.n_features))
    masks[0] = 1
    with torch.inference_mode():
        fast = minilm.embed_masks(lf, masks)
        slow = minilm(lf.compose(masks))
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_mask_tokenization_truncates_like_the_tokenizer(minilm):
    text = " ".join(f"word{i}" for i in range(200))
    lf = LyricsFactorization(text)
    masks = np.ones((2, lf.n_features), np.uint8)
    masks[1, :50] = 0  # dropping words lets later words into the window, as re-tokenizing does
    with torch.inference_mode():
        torch.testing.assert_close(minilm.embed_masks(lf, masks), minilm(lf.compose(masks)), atol=1e-5, rtol=1e-4)
