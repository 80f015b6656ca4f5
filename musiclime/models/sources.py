"""Where a model's or an encoder's files come from: a folder, or a Hugging Face hub
snapshot pinned to its commit, and the hash that names a folder's weights. No model code
here: the registry and the encoders both import it, and it imports neither."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

HUB = re.compile(r"hf:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?")
# What a model needs and nothing else: other files on the hub (pickled weights, training
# arguments, optimizer states) are never downloaded, and in a folder never opened.
HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "preprocessor_config.json",
             "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
             "vocab.json", "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model"]


class ModelNotAvailable(FileNotFoundError):
    """A hub model that is neither in the HF cache nor reachable."""


def hub_snapshot(repo: str, revision: str | None) -> str:
    """The local folder of ``repo`` at ``revision`` (a branch, tag or commit): downloaded
    (only :data:`HUB_FILES`) when the hub is reachable and ``HF_HUB_OFFLINE`` is unset, else
    from the HF cache. Its name is the commit."""
    from huggingface_hub import snapshot_download
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES, local_files_only=offline)
    except Exception as e:
        from huggingface_hub import constants
        at = f"@{revision}" if revision else ""
        why = "the hub is switched off (HF_HUB_OFFLINE is set)" if offline else f"the hub could not be reached ({type(e).__name__})"
        raise ModelNotAvailable(
            f"hf:{repo}{at} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}; pre-fetch it "
            f"where the hub is reachable: `hf download {repo}{' --revision ' + revision if revision else ''} "
            f"--include {' '.join(repr(p) for p in HUB_FILES)}` with the same HF_HOME") from None


def encoder_source(source: str | Path) -> tuple[str, str]:
    """A pretrained encoder named by a folder or ``hf:ORG/NAME[@REVISION]``: ``(local
    folder, the source pinned: an absolute folder or hf:ORG/NAME@<commit>)``."""
    hub = HUB.fullmatch(str(source))
    if hub:
        folder = hub_snapshot(hub["repo"], hub["rev"])
        return folder, f"hf:{hub['repo']}@{Path(folder).name}"
    if str(source).startswith("hf:"):
        raise ValueError(f"encoder {source!r}: a hub model is hf:ORG/NAME or hf:ORG/NAME@REVISION")
    if not Path(source).is_dir():
        raise FileNotFoundError(f"encoder {source!r} is neither a folder nor hf:ORG/NAME[@REVISION]")
    return str(source), str(Path(source).resolve())


def folder_hash(folder: str | Path) -> str:
    """sha256 of a model folder's config and safetensors weights (its model hash)."""
    h = hashlib.sha256()
    d = Path(folder)
    for p in [d / "config.json"] + sorted(d.glob("*.safetensors")):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
