"""Writing results so that a failure never leaves a missing, partial or replaced file behind.

Every output (PNG, mp4, JSON, JSON lines, tables) is written to a temporary name in its own
folder, checked (the encoder's status, a video that reopens with all its frames), flushed to
disk with ``fsync``, and only then renamed over the final name. A run that fails (a full disk,
a folder in the way, an encoder error, Ctrl-C) leaves the previous outputs as they were and
raises :class:`OutputError` (an ``OSError``) naming the path. ``check_output_dir`` finds an unwritable ``--out`` before
any work starts.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np


class OutputError(OSError):
    """An output that could not be written; the message names the path and the reason."""


def _cannot(path, exc: BaseException) -> OutputError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return OutputError(f"cannot write {path}: {reason}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` (ending in ``suffix``, so that encoders that pick a
    format by name still can) to write to; on leaving without an error it is synced and
    renamed to ``path``, otherwise removed. OS errors become :class:`OutputError`."""
    path = Path(path)
    tmp = _temporary_beside(path, suffix or ".tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OutputError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _cannot(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)       # atomic_path syncs it before the rename
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def finite_or_none(value: Any, counter: list) -> Any:
    """``value`` with every non-finite float replaced by None (JSON null); ``counter[0]``
    counts the replacements."""
    if isinstance(value, float) and not math.isfinite(value):
        counter[0] += 1
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v, counter) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v, counter) for v in value]
    return value


def json_text(obj: Any, what: str = "output", **kwargs) -> str:
    """``json.dumps`` that writes NaN and infinity as null, with one warning saying how many,
    so the file stays valid JSON."""
    counter = [0]
    clean = finite_or_none(obj, counter)
    if counter[0]:
        warnings.warn(f"{what}: {counter[0]} non-finite values (NaN or inf) written as null", RuntimeWarning,
                      stacklevel=3)
    return json.dumps(clean, allow_nan=False, **kwargs)


def write_json(path, obj: Any, **kwargs) -> Path:
    return write_text(path, json_text(obj, str(path), **kwargs))


def encode_png(rgb: np.ndarray, path="image") -> bytes:
    """An (H, W, 3) uint8 RGB image as the bytes of a PNG file."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OutputError(f"cannot write {path}: the PNG encoder failed")
    return buf.tobytes()


def write_png(path, rgb: np.ndarray) -> Path:
    """An (H, W, 3) uint8 RGB image as PNG at ``path``."""
    return write_bytes(path, encode_png(rgb, path))


class Staged:
    """The outputs of one run, each written whole to a temporary name as it is made, and all
    renamed into place by :meth:`commit` at the end; an error inside ``with Staged() as out``
    drops them, so a run that fails halfway replaces none of the previous run's files."""

    def __init__(self):
        self._pending = []       # (temporary, final)

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

    def bytes(self, path, data: bytes) -> Path:
        path = Path(path)
        tmp = _temporary_beside(path, ".tmp")
        self._pending.append((tmp, path))
        try:
            tmp.write_bytes(data)
            _fsync(tmp)
        except OSError as exc:
            raise _cannot(path, exc) from None
        return path

    def png(self, path, rgb: np.ndarray) -> Path:
        return self.bytes(path, encode_png(rgb, path))

    def json(self, path, obj: Any, **kwargs) -> Path:
        return self.bytes(path, json_text(obj, str(path), **kwargs).encode("utf-8"))

    def commit(self) -> None:
        try:
            for tmp, path in self._pending:
                _refuse_a_folder_at(path)         # one may have appeared since the write
                os.replace(tmp, path)
        except OSError as exc:
            self.abort()
            raise exc if isinstance(exc, OutputError) else _cannot(path, exc) from None
        self._pending = []

    def abort(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []


def _refuse_a_folder_at(path: Path) -> None:
    if path.is_dir():
        raise OutputError(f"cannot write {path}: a folder of that name is in the way")


def _temporary_beside(path: Path, suffix: str) -> Path:
    _refuse_a_folder_at(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _cannot(path, exc) from None
    return Path(tmp)


class VideoFile:
    """An mp4 written through a temporary file: ``write`` frames (RGB), then ``close`` checks
    that the file reopens with every frame, syncs it and renames it into place; ``abort``
    removes it. Either way an earlier video of that name stays until the new one is whole."""

    def __init__(self, path, fps: float, size):
        self.path, self.frames = Path(path), 0
        self.tmp = _temporary_beside(self.path, ".mp4")
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, tuple(size))
        if not self.writer.isOpened():
            self.abort()
            raise OutputError(f"cannot write {self.path}: OpenCV has no mp4v encoder here")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path:
        self.writer.release()
        cap = cv2.VideoCapture(str(self.tmp))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
        cap.release()
        if count != self.frames:
            self.abort()
            raise OutputError(f"cannot write {self.path}: the video came out unreadable ({max(count, 0)} of "
                              f"{self.frames} frames readable; is the disk full?)")
        try:
            _fsync(self.tmp)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise _cannot(self.path, exc) from None
        return self.path

    def abort(self) -> None:
        """Drop the temporary file."""
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


def check_output_dir(path, what: str = "--out") -> Path:
    """``path`` as a folder that exists and takes files (created if missing), checked before
    any work starts: a file in its place (``ValueError``), a read-only or full folder
    (:class:`OutputError`) is one line naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} must be a folder, got the file {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hrfast-write-test.", dir=path)
        try:
            os.write(fd, b"0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {path} is not writable: {exc.strerror or exc}") from None
    return path


def check_output_file(path, what: str) -> Path:
    """A file to be written later: its folder is checked now (``check_output_dir``), and a
    folder with its name is an error now, not after the work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, expected a file name")
    check_output_dir(path.parent, f"the folder of {what}")
    return path
