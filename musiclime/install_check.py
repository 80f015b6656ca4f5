"""One clear line when the installed torch and torchaudio cannot load together.

torchaudio is a compiled extension of one torch release: a mismatched pair fails deep
inside ``import torchaudio`` with an undefined symbol, which surfaces as many unrelated
test failures. ``python -m musiclime.install_check`` (run by ``make``), the test session
and ``musiclime explain`` ask here first.
"""
from __future__ import annotations

import sys

FIX = "install the pinned pair from requirements.lock: rm -rf .venv && make venv"


class BrokenInstallError(RuntimeError):
    """torch or torchaudio does not import."""


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


def check_torch_pair() -> str:
    """``"torch X, torchaudio Y"`` when both import; else :class:`BrokenInstallError`."""
    try:
        import torch
    except Exception as e:  # ImportError, OSError from a shared library, ...
        raise BrokenInstallError(f"torch {_version('torch')} does not import ({_first_line(e)}); {FIX}") from None
    try:
        import torchaudio  # noqa: F401
    except Exception as e:
        raise BrokenInstallError(
            f"torchaudio {_version('torchaudio')} does not load against torch {torch.__version__} "
            f"({_first_line(e)}); they must be the same release: {FIX}") from None
    return f"torch {torch.__version__}, torchaudio {_version('torchaudio')}"


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def main() -> int:
    try:
        print(f"install ok: {check_torch_pair()}")
        return 0
    except BrokenInstallError as e:
        print(f"musiclime: broken install: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
