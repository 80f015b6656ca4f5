"""Training and evaluating late-fusion models on a library with stems and labels.

Audio is augmented with LIME-like perturbations (random stem-segments dropped), so the
model has seen inputs like the ones it will be explained on. A frozen lyrics encoder's
embeddings are computed once per track (plus word-dropout variants), so an epoch costs
only the audio encoder.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from musiclime.audio_io import read_audio
from musiclime.factorization import STEM_NAMES
from musiclime.models.fusion import LateFusionClassifier


@dataclass
class LibraryData:
    """Tracks of one split, decoded: stems ``float32 [N, 4, n_samples]`` and mixes ``[N, n_samples]``."""
    track_ids: list[str]
    stems: torch.Tensor
    mixes: torch.Tensor
    lyrics: list[str]
    labels: np.ndarray
    classes: list[str]
    sample_rate: int


def read_catalogue_table(path: str | Path):
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pylist()


def load_split(catalogue: str | Path, task: str, split: str, sample_rate: int = 16000,
               classes: list[str] | None = None, limit: int | None = None) -> LibraryData:
    catalogue = Path(catalogue)
    if catalogue.is_dir():
        catalogue = catalogue / "catalogue.parquet"
    root = catalogue.parent
    rows = [r for r in read_catalogue_table(catalogue) if split == "all" or r.get("split") == split]
    if limit:
        rows = rows[:limit]
    if not rows:
        raise ValueError(f"no {split} tracks in {catalogue}")
    if task not in rows[0]:
        raise ValueError(f"the catalogue has no {task!r} column")
    classes = classes or sorted({r[task] for r in rows})
    stems, mixes = [], []
    for r in rows:
        s = [read_audio(root / r[f"{name}_path"], sample_rate)[0] for name in STEM_NAMES]
        n = min(len(x) for x in s)
        stems.append(np.stack([x[:n] for x in s]))
        mixes.append(read_audio(root / r["audio_path"], sample_rate)[0][:n])
    n = min(x.shape[1] for x in stems)
    return LibraryData([r["track_id"] for r in rows], torch.from_numpy(np.stack([x[:, :n] for x in stems])),
                       torch.from_numpy(np.stack([x[:n] for x in mixes])), [r["lyrics"] for r in rows],
                       np.array([classes.index(r[task]) for r in rows]), list(classes), sample_rate)


def perturb_mix(stems: torch.Tensor, generator: torch.Generator, p_perturb: float = 0.5,
                p_keep: float = 0.75, n_segments: int = 10) -> torch.Tensor:
    """Mixes of ``stems [B, S, T]`` where, for a ``p_perturb`` share of the batch, each
    stem-segment is kept with probability ``p_keep`` (the rest keep everything)."""
    B, S, T = stems.shape
    L = T // n_segments
    keep = (torch.rand(B, S, n_segments, generator=generator) < p_keep).float()
    whole = torch.rand(B, generator=generator) >= p_perturb
    keep[whole] = 1.0
    body = (stems[:, :, :L * n_segments].reshape(B, S, n_segments, L) * keep[..., None]).sum(1)
    return body.reshape(B, L * n_segments)


def drop_words(text: str, rng: np.random.Generator, p_drop: float = 0.5) -> str:
    from musiclime.factorization import LyricsFactorization
    lf = LyricsFactorization(text)
    if lf.n_features == 0:
        return text
    return lf.compose((rng.random((1, lf.n_features)) >= p_drop).astype(np.uint8))[0]


def _lyrics_embeddings(model: LateFusionClassifier, lyrics: list[str], variants: int, seed: int,
                       batch: int = 32) -> torch.Tensor:
    """``[variants + 1, N, D]``: the lyrics, then word-dropout variants."""
    rng = np.random.default_rng(seed)
    out = []
    with torch.inference_mode():
        for v in range(variants + 1):
            texts = lyrics if v == 0 else [drop_words(t, rng) for t in lyrics]
            out.append(torch.cat([model.embed_lyrics(texts[i:i + batch]) for i in range(0, len(texts), batch)]))
    return torch.stack(out).clone()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fusion_loss(model: LateFusionClassifier, a: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                loss_fn, unimodal_weight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the fused prediction plus, for a two-modality model, of its
    audio-only view (lyrics zeroed), so the audio branch is trained as well as an
    audio-only model's. (A lyrics-only term was tried and removed: on a small library it
    teaches the head to memorise each training lyric.) Returns (loss, fused logits)."""
    logits = model.logits(a, t)
    loss = loss_fn(logits, y)
    if a.shape[1] and t.shape[1] and unimodal_weight:
        loss = loss + unimodal_weight * loss_fn(model.logits(a, torch.zeros_like(t)), y)
    return loss, logits


def train_model(model: LateFusionClassifier, data: LibraryData, epochs: int = 30, batch_size: int = 16,
                lr: float = 2e-3, seed: int = 0, lyric_variants: int = 8, max_steps: int | None = None,
                verbose: bool = True) -> dict:
    """Fit ``model`` on ``data`` in place (CPU or the model's device). Returns a history.

    Augmentations: LIME-like stem-segment dropout on the audio, word dropout on the
    lyrics; a two-modality model also learns from its audio alone (fusion_loss)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = model.device
    frozen_lyrics = model.uses_lyrics and not any(p.requires_grad for p in model.lyrics_encoder.parameters())
    cached = _lyrics_embeddings(model, data.lyrics, lyric_variants, seed) if frozen_lyrics else None
    lyric_head = {id(p) for p in model.lyrics_norm.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in lyric_head], "weight_decay": 1e-4},
                             {"params": [p for p in params if id(p) in lyric_head], "weight_decay": 1e-2}], lr=lr)
    steps_per_epoch = -(-len(data.labels) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * steps_per_epoch),
                                                pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    n = len(labels)
    history, step, t0 = [], 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        tot, correct = 0.0, 0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            if model.uses_audio:
                a = model.embed_audio(perturb_mix(data.stems[idx], gen).to(dev))
            else:
                a = torch.zeros(len(idx), 0, device=dev)
            if not model.uses_lyrics:
                t = torch.zeros(len(idx), 0, device=dev)
            elif cached is not None:
                v = torch.randint(0, cached.shape[0], (len(idx),), generator=gen)
                t = cached[v, idx].to(dev)
            else:
                t = model.embed_lyrics([drop_words(data.lyrics[j], rng) for j in idx.tolist()])
            loss, logits = fusion_loss(model, a, t, labels[idx].to(dev), loss_fn)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1).cpu() == labels[idx]).sum())
            step += 1
            if max_steps and step >= max_steps:
                break
        elapsed = time.perf_counter() - t0
        history.append(dict(epoch=epoch + 1, loss=tot / n, train_accuracy=correct / n, seconds=elapsed))
        if verbose:
            eta = elapsed / (epoch + 1) * (epochs - epoch - 1)
            log(f"epoch {epoch + 1}/{epochs}  loss {tot / n:.3f}  train acc {correct / n:.3f}  "
                f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s")
        if max_steps and step >= max_steps:
            break
    model.eval()
    return {"history": history, "steps": step}


def predict(model, data: LibraryData, batch_size: int = 16) -> np.ndarray:
    """Probabilities ``[N, C]`` of the unperturbed mixes and lyrics."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(data.lyrics), batch_size):
            p = model.predict_proba(data.mixes[i:i + batch_size], data.lyrics[i:i + batch_size])
            out.append(torch.as_tensor(p).float().cpu().numpy())
    return np.concatenate(out)


def metrics(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> dict:
    from sklearn.metrics import accuracy_score, f1_score
    pred = probs.argmax(1)
    return {"accuracy": float(accuracy_score(labels, pred)),
            "macro_f1": float(f1_score(labels, pred, average="macro", labels=list(range(n_classes)),
                                       zero_division=0)),
            "n": int(len(labels))}


def library_hash(catalogue: str | Path) -> str:
    import hashlib
    p = Path(catalogue)
    p = p / "catalogue.parquet" if p.is_dir() else p
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def train_paper(library: str | Path, task: str, audio_encoder: str, text_encoder: str, out: str | Path,
                unfreeze_audio: int = 0, unfreeze_text: int = 0, modality: str = "both", epochs: int = 10,
                seed: int = 0, batch_size: int = 16, limit: int | None = None, max_steps: int | None = None,
                verbose: bool = True) -> Path:
    """Train the paper-style fusion (AST + RoBERTa-style encoders, each a folder or
    ``hf:ORG/NAME[@REVISION]``; frozen, or their last N layers unfrozen; the head trained)
    on the library's train split and save it with its held-out metrics."""
    from musiclime.models.checkpoint import save_checkpoint
    from musiclime.models.paper import paper_model
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    from transformers import AutoFeatureExtractor

    from musiclime.models.sources import encoder_source
    sr = int(AutoFeatureExtractor.from_pretrained(encoder_source(audio_encoder)[0]).sampling_rate)
    train = load_split(library, task, "train", sr, limit=limit)
    test = load_split(library, task, "test", sr, classes=train.classes, limit=limit)
    model = paper_model(audio_encoder, text_encoder, train.classes, modality, trainable=False,
                        unfreeze_audio=unfreeze_audio, unfreeze_text=unfreeze_text)
    hist = train_model(model, train, epochs=epochs, batch_size=batch_size, seed=seed, max_steps=max_steps,
                       verbose=verbose)
    m = metrics(test.labels, predict(model, test), len(train.classes))
    if verbose:
        log(f"held-out {task}/{modality} (paper style): accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} "
            f"(n={m['n']}; {time.perf_counter() - t0:.0f}s)")
    return save_checkpoint(model, out, task=task, library=library_hash(library), seed=seed, epochs=epochs,
                           test_metrics=m, history=hist["history"], arch="paper")


def train_default(library: str | Path, task: str, modality: str, out: str | Path, epochs: int = 30,
                  seed: int = 0, sample_rate: int = 16000, verbose: bool = True) -> Path:
    """Train the default model for ``task`` on the library's train split and save it,
    with its held-out metrics in the config."""
    from musiclime.models.checkpoint import save_checkpoint
    t0 = time.perf_counter()
    train = load_split(library, task, "train", sample_rate)
    test = load_split(library, task, "test", sample_rate, classes=train.classes)
    torch.manual_seed(seed)
    from musiclime.models.fusion import default_model
    model = default_model(train.classes, sample_rate, modality)
    hist = train_model(model, train, epochs=epochs, seed=seed, verbose=verbose)
    m = metrics(test.labels, predict(model, test), len(train.classes))
    if verbose:
        log(f"held-out {task}/{modality}: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} "
            f"(n={m['n']}; {time.perf_counter() - t0:.0f}s)")
    return save_checkpoint(model, out, task=task, library=library_hash(library), seed=seed,
                           epochs=epochs, test_metrics=m, history=hist["history"])
