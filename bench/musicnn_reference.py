"""musicnn's own tag probabilities (its TensorFlow code) on the parity clips: the reference the
PyTorch re-implementation is tested against (tests/fixtures/musicnn_reference.json).

Runs in a scratch environment, never in the project's (TensorFlow is not a dependency):

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 librosa==0.10.2.post1 soundfile
    /tmp/tfenv/bin/pip install --no-deps musicnn==0.1.0
    .venv/bin/python -m tests.musicnn_clips /tmp/clips
    /tmp/tfenv/bin/python bench/musicnn_reference.py /tmp/clips tests/fixtures/musicnn_reference.json

TensorFlow 2.15 is the last release whose ``tf.compat.v1.layers`` (musicnn's graph) work
without Keras 3. Numpy 1.26 keeps musicnn's arithmetic (``10000 * float16`` is float32
under numpy < 2). The track's probabilities are the mean of the taggram over its patches,
as ``musicnn.tagger.top_tags`` computes them.
"""

import hashlib
import json
import sys
from pathlib import Path


def main(clips: str, out: str) -> None:
    import librosa
    import numpy as np
    import soundfile as sf
    import tensorflow as tf
    from musicnn.extractor import extractor

    doc = {
        "made_by": "bench/musicnn_reference.py",
        "tensorflow": tf.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "musicnn": "0.1.0",
        "clips": {},
    }
    for wav in sorted(Path(clips).glob("*.wav")):
        audio, sr = sf.read(wav, dtype="float32")
        assert sr == 16000 and audio.ndim == 1, (wav, sr, audio.shape)
        entry = {"sha256_16": hashlib.sha256(audio.astype("<f4").tobytes()).hexdigest()[:16]}
        for model in ("MTT_musicnn", "MSD_musicnn"):
            taggram, _ = extractor(str(wav), model=model, extract_features=False)
            entry[model.split("_")[0]] = [round(float(p), 8) for p in np.mean(taggram, axis=0)]
        doc["clips"][wav.stem] = entry
        print(wav.stem, entry["sha256_16"], file=sys.stderr)
    Path(out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
