"""The AST + RoBERTa path, on tiny random-init models saved and loaded like real ones."""
import numpy as np
import pytest
import torch

from musiclime import AudioFactorization, LyricsFactorization, MusicLIME
from musiclime.models import load_model, save_checkpoint
from musiclime.models.paper import paper_model
from musiclime.training import LibraryData, train_model
from tests.hf_tiny import tiny_ast, tiny_roberta
from tests.toys import planted_stems


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return tiny_ast(root / "ast"), tiny_roberta(root / "roberta")


def test_ast_roberta_train_save_load_explain(hf_dirs, tmp_path):
    ast_dir, roberta_dir = hf_dirs
    model = paper_model(ast_dir, roberta_dir, ["calm", "fierce"], hidden=16)
    assert model.sample_rate == 16000
    stems = torch.from_numpy(np.stack([planted_stems(seed=i, sr=16000, seconds=3) for i in range(4)]))
    data = LibraryData([f"t{i}" for i in range(4)], stems, stems.sum(1), ["fire night", "calm rain", "fire", "rain"],
                       np.array([1, 0, 1, 0]), ["calm", "fierce"], 16000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = train_model(model, data, epochs=1, batch_size=2, max_steps=1, verbose=False)
    assert hist["steps"] == 1
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("audio_encoder.model.") for k in changed)   # AST fine-tuned
    assert any(k.startswith("lyrics_encoder.model.") for k in changed)  # RoBERTa fine-tuned

    save_checkpoint(model, tmp_path / "ckpt")
    back = load_model(str(tmp_path / "ckpt"))
    audio, texts = stems[:2].sum(1), ["fire night", "calm rain"]
    torch.testing.assert_close(model.predict_proba(audio, texts), back.predict_proba(audio, texts))

    af = AudioFactorization(stems[0], 16000, n_segments=6)
    exp = MusicLIME(num_samples=60, batch_size=16, seed=0).explain(back, af, LyricsFactorization("fire in the night"),
                                                                     labels=[1])
    assert len(exp.as_list(1)) == 4 * 6 + 4
    assert np.isfinite([w for *_, w in exp.as_list(1)]).all()


def test_roberta_mask_tokenization_differences_are_documented(hf_dirs):
    """Byte-level BPE glues a space to the next word ('Ġnight'); removing a word leaves two
    spaces that re-tokenizing turns into an extra 'Ġ' token, the mask path does not. So
    for RoBERTa the two paths differ by design; masks of all ones agree exactly."""
    from musiclime.models.lyrics import TransformerLyricsEncoder
    enc = TransformerLyricsEncoder(hf_dirs[1], normalize=False)
    lf = LyricsFactorization("the fire burns and we run through the night")
    full = np.ones((1, lf.n_features), np.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(enc.embed_masks(lf, full), enc(lf.compose(full)), atol=1e-5, rtol=1e-4)
    ids, owner = enc.token_words(lf)
    assert len(ids) == len(owner) and (owner >= 0).sum() >= lf.n_features
