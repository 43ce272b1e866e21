"""Loading files that users hand to hrfast (checkpoints), without running code from them.

``load_checkpoint(path, what)`` is the one way hrfast reads a ``.pth``:

- ``torch.load(weights_only=True)``: the unpickler builds tensors, containers and numbers
  only. A pickle that asks for anything else (a function to call, a class to build) is
  refused with one line naming the file and the global it asked for. Official HRNet
  checkpoints are plain state_dicts and load unchanged.
- For a zip checkpoint (torch's format since 1.6), every member's CRC is verified first:
  ``torch.load`` does not check them, so a bit-flipped file would otherwise load silently.
- A truncated or foreign file is one line naming the file and what was found.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Union

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read; the message names the file."""


def verify_zip(path: Path, what: str = "checkpoint") -> None:
    """Raise CheckpointError when a zip checkpoint has a member whose CRC does not match."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{what} {path} is a damaged zip file ({exc})") from None
    if bad is not None:
        raise CheckpointError(f"{what} {path} is corrupt: CRC mismatch in {bad!r}")


def load_checkpoint(path: Union[str, Path], what: str = "checkpoint") -> Any:
    """The object saved in ``path`` (CPU tensors), loaded as data only (module doc).
    ``what`` names the file's role in the messages (``"checkpoint"``, ``"--resume checkpoint"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if zipfile.is_zipfile(path):
        verify_zip(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        asked = _refused_global(str(exc))
        if asked is None:   # not a pickle the weights-only reader understands: garbage or foreign
            raise CheckpointError(f"{what} {path} is not a readable PyTorch file (a damaged or foreign "
                                  f"pickle)") from None
        raise CheckpointError(f"{what} {path} holds more than tensors and plain data (it asks for {asked}): "
                              f"refusing to load it (hrfast never runs code from a checkpoint)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{what} {path} is not a readable PyTorch file ({first})") from None


def _refused_global(message: str):
    """The global (e.g. 'posix.system') that torch's weights-only reader refused, or None."""
    for line in message.splitlines():
        if "GLOBAL " in line:
            return line.split("GLOBAL ", 1)[1].split()[0].rstrip(".,;")
    return None
