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


def test_filterbank_on_the_device_equals_the_extractor(hf_dirs):
    """The AST features the encoder computes for a whole batch (musiclime.models.features)
    equal the Hugging Face extractor's, clip by clip, within 1e-3: the tiny model's config
    and AST-base's (128 mels, 1024 frames), silence, quiet, loud, short and long clips."""
    import numpy as np
    import torch
    from transformers import ASTFeatureExtractor

    from musiclime.models.features import KaldiFbank
    rng = np.random.default_rng(0)
    for fe in (ASTFeatureExtractor.from_pretrained(str(hf_dirs[0])), ASTFeatureExtractor()):
        fb = KaldiFbank.from_extractor(fe)
        for seconds in (1.5, 12.0):
            n = int(16000 * seconds)
            clips = np.stack([np.zeros(n, np.float32), rng.normal(0, 0.001, n).astype(np.float32),
                              rng.normal(0, 0.3, n).astype(np.float32),
                              np.sin(np.arange(n) * 0.05).astype(np.float32)])
            want = torch.stack([fe([c], sampling_rate=16000, return_tensors="pt")["input_values"][0] for c in clips])
            got = fb(torch.tensor(clips))
            assert got.shape == want.shape == (4, fe.max_length, fe.num_mel_bins)
            assert (got - want).abs().max().item() < 1e-3


def test_the_gpu_stage_benchmark_runs_on_cpu_with_tiny_sizes(tmp_path):
    """bench/gpu.sh's script (the product's GPU stage, no Ray) end to end with tiny sizes."""
    import json

    from bench.bench_gpu_stage import main
    r = main(["--size", "tiny", "--tracks", "1", "--num-samples", "32", "--seconds", "3", "--device", "cpu",
              "--whole-seconds", "6", "--out", str(tmp_path)])
    assert r["fbank_max_abs_diff"] < 1e-3
    # the checkpoint's AST hears 2.56 s: under --window whole a 6 s track is 3 windows
    assert r["runs"]["provided_stems"]["windows"] == 1 and r["runs"]["whole_track"]["windows"] == 3
    for run in r["runs"].values():
        assert run["tracks"] == 1 and run["tracks_per_gpu_hour"] > 0 and run["model_rows_per_track"] == 64
    assert r["runs"]["demucs_in_stage"]["separate_s_per_track"] > 0
    assert json.loads((tmp_path / "gpu_stage_smoke.json").read_text())["size"] == "tiny"


def test_the_presets_benchmark_runs_on_cpu_with_tiny_sizes(tmp_path):
    """bench/gpu.sh's presets pass with tiny sizes: FLOPs counted per encoder row, the
    preset's design used, tracks per hour with and without demucs."""
    from bench.bench_gpu_stage import main
    r = main(["--presets", "--qualities", "fast", "--size", "tiny", "--tracks", "2", "--seconds", "3",
              "--demucs-batch", "2", "--device", "cpu", "--out", str(tmp_path)])
    assert r["flops_per_row"]["audio"] > 1e6 and r["flops_per_row"]["text"] > 1e4
    assert r["attention_kernels"]["audio"] and r["attention_kernels"]["text"]  # SDPA (or its fallback) seen
    assert set(r["runs"]) == {"fast, provided stems", "fast, demucs separating"}
    for run in r["runs"].values():
        assert run["design"] == "orthogonal-cross" and run["tracks_per_hour"] > 0
        assert run["audio_rows"] + run["text_rows"] <= 200 and run["fraction_of_peak"] is None
    assert r["runs"]["fast, demucs separating"]["separate_s_per_track"] > 0
    assert r["runs"]["fast, demucs separating"]["tracks_per_call"] == 2  # separated together
    assert (tmp_path / "cpu_presets_tiny.json").is_file()


def test_the_levers_benchmark_runs_on_cpu_with_tiny_sizes(tmp_path):
    """bench/gpu.sh's levers pass with tiny sizes: the eager row (CUDA-only kernels left out
    on a CPU; the compile rows' compile_model is tests/test_accelerate.py's), the pinned
    copy, demucs alone / batched / bf16 with bf16's error."""
    import json

    from bench.bench_gpu_stage import main
    r = main(["--levers", "--size", "tiny", "--batch", "2", "--demucs-batch", "2", "--demucs-tracks", "2",
              "--no-compile-levers", "--device", "cpu", "--out", str(tmp_path)])
    rows = r["encoder"]["rows"]
    assert set(rows) == {"eager, SDPA's choice"}
    assert rows["eager, SDPA's choice"]["audio_rows_per_s"] > 0 and rows["eager, SDPA's choice"]["text_rows_per_s"] > 0
    assert set(r["copies"]) == {"pageable", "pinned, non-blocking", "bytes_per_track"}
    demucs = r["demucs"]
    assert set(demucs["rows"]) == {"alone, fp32", "2 per call, fp32", "2 per call, bf16"}
    assert 0 < demucs["rows"]["2 per call, bf16"]["relative_error_vs_fp32"] < 0.1
    assert demucs["batched_vs_alone_max_relative_difference"] < 1e-4
    assert json.loads((tmp_path / "cpu_levers_tiny.json").read_text())["demucs"]["batch"] == 2


def test_train_paper_style_frozen_hub_encoders_through_the_cli(demo_library, tmp_path):
    """`musiclime train --arch paper` with encoders named by hub ids (from the HF cache,
    offline): the head trains, the frozen encoders are referenced by their pinned commit and
    weight hash, not copied; the checkpoint loads and explains; changed encoder weights are
    refused at load."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors import safe_open

    from tests.hf_tiny import as_hub_cache
    hf = tmp_path / "hf"
    commit = "a" * 40
    as_hub_cache(tiny_ast(tmp_path / "ast"), hf, "acme/ast-tiny", commit)
    as_hub_cache(tiny_roberta(tmp_path / "roberta"), hf, "acme/roberta-tiny", commit)
    env = dict(os.environ, HF_HOME=str(hf), HF_HUB_OFFLINE="1")
    out = tmp_path / "paper-ckpt"
    r = subprocess.run([str(Path(sys.executable).parent / "musiclime"), "train", "--arch", "paper", "--library",
                        str(demo_library), "--audio-encoder", "hf:acme/ast-tiny", "--text-encoder",
                        "hf:acme/roberta-tiny@main", "--out", str(out), "--epochs", "1", "--limit", "8",
                        "--batch-size", "4"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "paper" and cfg["audio_encoder"]["path"] == f"hf:acme/ast-tiny@{commit}"
    assert cfg["lyrics_encoder"]["path"] == f"hf:acme/roberta-tiny@{commit}"
    assert len(cfg["audio_encoder"]["weights_sha256"]) == 64 and cfg["test_metrics"]["n"] > 0
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith(("audio_encoder.model.", "lyrics_encoder.model.")) for k in keys)
    code = ("import sys, torch; from musiclime.models import load_model; m = load_model(sys.argv[1]); "
            "print(m.predict_proba(torch.zeros(1, 32000), ['fire night']).shape)")
    ok = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "torch.Size([1," in ok.stdout, ok.stderr[-2000:]
    weights = hf / "hub" / "models--acme--ast-tiny" / "snapshots" / commit / "model.safetensors"
    from safetensors.torch import load_file, save_file
    state = load_file(str(weights))
    save_file({k: v + 1 for k, v in state.items()}, str(weights))
    bad = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "holds other weights than the checkpoint was trained with" in bad.stderr


def test_train_paper_style_with_the_last_layer_unfrozen(demo_library, tmp_path):
    """--unfreeze 1 trains the last encoder layer (and AST's final norm) with the head and
    stores the encoders in the checkpoint; the earlier layer stays as it was."""
    from safetensors import safe_open

    from musiclime.training import train_paper
    ast_dir = tiny_ast(tmp_path / "ast2", layers=2)
    roberta_dir = tiny_roberta(tmp_path / "roberta")
    out = train_paper(demo_library, "genre", str(ast_dir), str(roberta_dir), tmp_path / "ckpt", unfreeze_audio=1,
                      unfreeze_text=1, epochs=1, batch_size=4, limit=8, verbose=False)
    from transformers import ASTModel
    before = ASTModel.from_pretrained(str(ast_dir)).state_dict()  # the names the model uses
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        after = {k.removeprefix("audio_encoder.model."): f.get_tensor(k) for k in f.keys()
                 if k.startswith("audio_encoder.model.")}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("layers.1.", "layernorm.")) for k in changed)
    assert any(k.startswith("layers.1.") for k in changed)
    back = load_model(str(out))
    assert back.predict_proba(torch.zeros(1, 32000), ["fire"]).shape[0] == 1
