"""musicnn in PyTorch (issue: a real pretrained tagger): the TensorFlow checkpoint reader on
checkpoints it writes and on the shipped files, and parity with musicnn's own TensorFlow
code (tests/fixtures/musicnn_reference.json, made by bench/musicnn_reference.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from musiclime.models.tf_checkpoint import CheckpointError, read_checkpoint, read_index, write_checkpoint

REFERENCE = Path(__file__).with_name("fixtures") / "musicnn_reference.json"


def _tensors(rng) -> dict[str, np.ndarray]:
    return {
        "a/kernel": rng.standard_normal((7, 38, 1, 4)).astype(np.float32),
        "a/bias": rng.standard_normal(4).astype(np.float32),
        "a/bias/Adam": rng.standard_normal(4).astype(np.float32),  # shares a long prefix with the one before
        "global_step": np.array(1234, dtype=np.int64),
        "half": rng.standard_normal((3, 2)).astype(np.float16),
        "counts": rng.integers(-5, 5, (2, 3, 4), dtype=np.int32),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.float64),
        **{f"layer_{i}/w": rng.standard_normal((i + 1,)).astype(np.float32) for i in range(12)},
    }


@pytest.mark.parametrize("block_entries", [1, 3, 64])
def test_a_checkpoint_it_writes_reads_back_exactly(tmp_path, block_entries):
    tensors = _tensors(np.random.default_rng(0))
    write_checkpoint(tmp_path / "ckpt", tensors, block_entries=block_entries)
    index = read_index(tmp_path / "ckpt")
    assert set(index) == set(tensors)
    assert index["a/kernel"].shape == (7, 38, 1, 4) and index["global_step"].shape == ()
    back = read_checkpoint(tmp_path / "ckpt")
    for name, arr in tensors.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape, name
        np.testing.assert_array_equal(back[name], arr)
    assert set(read_checkpoint(tmp_path / "ckpt", ["a/bias"])) == {"a/bias"}


def test_damage_is_an_error_never_wrong_weights(tmp_path):
    write_checkpoint(tmp_path / "ok", _tensors(np.random.default_rng(1)), block_entries=4)
    index, data = (tmp_path / "ok.index").read_bytes(), (tmp_path / "ok.data-00000-of-00001").read_bytes()

    def case(name: str, idx: bytes, dat: bytes, match: str) -> None:
        (tmp_path / f"{name}.index").write_bytes(idx)
        (tmp_path / f"{name}.data-00000-of-00001").write_bytes(dat)
        with pytest.raises(CheckpointError, match=match):
            read_checkpoint(tmp_path / name)

    flipped = bytearray(data)
    flipped[100] ^= 0x01  # one bit of one weight
    case("data-bit", index, bytes(flipped), "checksum mismatch")
    case("data-short", index, data[: len(data) // 2], "truncated")
    entry_byte = bytearray(index)
    entry_byte[20] ^= 0x40  # inside the first data block
    case("index-bit", bytes(entry_byte), data, "checksum mismatch")
    case("index-short", index[:-10], data, "no table magic")
    case("not-a-checkpoint", b"\x00" * 64, data, "no table magic")
    with pytest.raises(CheckpointError, match="no tensor named nope"):
        read_checkpoint(tmp_path / "ok", ["nope"])


@pytest.mark.parametrize("dataset", ["MTT", "MSD"])
def test_the_shipped_checkpoints_read_with_every_checksum(dataset):
    from musiclime.models.musicnn import Musicnn, checkpoint_prefix, weights_from_tf

    prefix = checkpoint_prefix(dataset)
    index = read_index(prefix)
    assert len(index) == 150  # 64 variables, 84 Adam slots, 2 Adam counters
    assert index["conv2d/kernel"].shape == (7, 38, 1, 204) and index["conv2d_5/kernel"].shape == (7, 561, 1, 64)
    assert index["dense_1/kernel"].shape == (200, 50)
    tensors = read_checkpoint(prefix)  # every tensor's CRC-32C checked
    net = Musicnn()
    state = weights_from_tf(tensors)
    assert set(state) == set(net.state_dict())  # every parameter and statistic, nothing left over
    net.load_state_dict(state)


def _reference_clips() -> dict[str, np.ndarray]:
    from musiclime.scores import RenderUnavailable
    from tests import musicnn_clips

    clips = {**musicnn_clips.demo(), **musicnn_clips.synthetic()}
    try:
        clips.update(musicnn_clips.rendered())
    except RenderUnavailable as e:  # a machine without fluidsynth: the other clips still run
        print(f"rendered clips left out: {e}")
    return clips


def test_probabilities_match_musicnn_tensorflow_within_1e_3():
    from musiclime.models.musicnn import MusicnnTagger
    from tests.musicnn_clips import digest

    ref = json.loads(REFERENCE.read_text())
    clips = _reference_clips()
    assert len(ref["clips"]) >= 10 and len(clips) >= 10
    worst = {}
    for dataset in ("MTT", "MSD"):
        model = MusicnnTagger(dataset)
        names = sorted(clips)
        for name in names:
            assert digest(clips[name]) == ref["clips"][name]["sha256_16"], f"clip {name} is not the reference's"
        batch = torch.from_numpy(np.stack([clips[n] for n in names]))
        probs = model.predict_proba(batch).numpy()
        for name, p in zip(names, probs):
            worst[(dataset, name)] = float(np.abs(p - np.array(ref["clips"][name][dataset])).max())
    # measured with the reference of TensorFlow 2.15.1: at most ~4e-6
    assert max(worst.values()) <= 1e-3, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


def test_patches_cover_the_audio_and_batches_do_not_change_results():
    from musiclime.models.musicnn import MusicnnTagger

    model = MusicnnTagger("MTT", patch_batch=3)
    rng = np.random.default_rng(0)
    audio = torch.from_numpy((0.1 * rng.standard_normal((2, 16000 * 10))).astype(np.float32))
    assert model.patches(audio).shape == (2, 3, 187, 96)  # 626 frames: three whole patches
    together = model.predict_proba(audio)
    alone = torch.cat([MusicnnTagger("MTT", patch_batch=64).predict_proba(audio[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)
    short = model.predict_proba(audio[:, :16000])  # one second: repeated to fill a patch
    assert short.shape == (2, 50) and torch.isfinite(short).all()
    assert ((together >= 0) & (together <= 1)).all() and not torch.allclose(together.sum(1), torch.ones(2))


def _library_folder(root: Path, demo_library: Path) -> Path:
    """A user's folder: two rendered excerpts (a chorale, a quartet: mixes only, the pipeline
    separates them) and a demo-library track; without FluidSynth, the demo track alone."""
    import shutil

    import soundfile as sf

    from musiclime import scores

    folder = root / "Music" / "Corpus"
    folder.mkdir(parents=True)
    shutil.copy(demo_library / "audio" / "demo-00000.flac", folder / "03 Demo.flac")
    try:
        for kind, name in (("choir", "01 Chorale.flac"), ("strings", "02 Quartet.flac")):
            stems = scores.render_piece(scores.pieces(kind, 1)[0], kind, 6.0, 16000, drums=False)
            sf.write(folder / name, np.clip(sum(stems.values()), -1, 1), 16000, subtype="PCM_16")
    except scores.RenderUnavailable as e:
        print(f"rendered scores left out: {e}")
    return root / "Music"


def test_musicnn_explains_a_folder_of_rendered_scores_and_demo_tracks(demo_library, tmp_path, ray_session):
    from musiclime.models.musicnn import MTT_LABELS
    from pipeline import output
    from pipeline.config import ExplainConfig
    from pipeline.driver import run_explain

    folder = _library_folder(tmp_path, demo_library)
    out = tmp_path / "out"
    s = run_explain(
        ExplainConfig(
            catalogue=str(folder),
            out=str(out),
            model="musicnn:MTT",
            separator="hpss",
            labels="choir,strings",
            num_samples=60,
            segments=4,
            seed=0,
            stem_cache=str(tmp_path / "stems"),
        ),
        show_progress=False,
    )
    assert s.exit_code == 0, s.message
    tracks, expl = output.frame(str(out), "tracks"), output.frame(str(out), "explanations")
    assert tracks.height == len(list(folder.rglob("*.flac"))) and tracks["modality"].unique().to_list() == ["audio"]
    assert [list(x) for x in tracks["explained_labels"]] == [["choir", "strings"]] * tracks.height
    assert set(expl["label"]) == {"choir", "strings"} and set(expl["modality"]) == {"audio"}
    assert json.loads((out / "run.json").read_text())["classes"] == MTT_LABELS


def test_labels_topk_and_class_names():
    from musiclime.stages import LabelRule, label_indices
    from pipeline.config import ExplainConfig, parse_labels

    classes, p = ["a", "b", "c", "d"], np.array([0.1, 0.7, 0.4, 0.9])
    assert label_indices(LabelRule("topk:2"), classes, p, None) == [3, 1]
    assert label_indices(LabelRule("topk:9"), classes, p, None) == [3, 1, 2, 0]
    assert label_indices(LabelRule("c,a"), classes, p, None) == [2, 0]
    assert parse_labels(" topk:03 ") == "topk:3" and parse_labels("choir, strings") == "choir,strings"
    for bad in ("topk:0", "topk:x", "a,,b", "a,a", ""):
        with pytest.raises(ValueError, match="labels"):
            ExplainConfig(catalogue="c", out="o", labels=bad)
    assert LabelRule("choir,jazz").unknown(["choir", "strings"]) == ["jazz"]
    assert LabelRule("topk:3").unknown([]) == [] and LabelRule("true").unknown([]) == []


def test_whole_tracks_are_heard_by_musicnn_itself_its_patches_covering_the_track():
    """musicnn declares no window: with --window whole the GPU stage hands it the whole track
    (no WholeTrack windows), and its prediction is the mean over every patch of the track."""
    from musiclime.gpu_stage import ExplainStage
    from musiclime.models.musicnn import PATCH
    from pipeline.config import ExplainConfig

    cfg = ExplainConfig(catalogue="c", out="o", model="musicnn:MTT", window="whole", num_samples=20)
    stage = ExplainStage(cfg.model, cfg.explainer_spec(), "audio", 4, "cpu", window="whole")
    assert stage.heard is stage.model and stage.window_seconds is None
    rng = np.random.default_rng(1)
    track = torch.from_numpy((0.1 * rng.standard_normal(16000 * 20)).astype(np.float32))[None]  # 20 s
    with torch.inference_mode():
        patches = stage.model.patches(track)[0]
        per_patch = torch.sigmoid(stage.model.net(patches))
    assert patches.shape[0] == (1 + track.shape[1] // 256) // PATCH == 6
    torch.testing.assert_close(stage.heard.predict_proba(track)[0], per_patch.mean(0), atol=1e-6, rtol=0)
