"""Checkpoints a kill cannot truncate, the check a resume makes before trusting one, and moving
a checkpoint's bookkeeping to another run directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

LAST = "last.ckpt"
TMP_SUFFIX = ".tmp"
# What Lightning needs to continue a fit where it stopped, beyond the weights.
_RESUME_KEYS = ("state_dict", "optimizer_states", "loops", "callbacks", "epoch", "global_step")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why, in one line."""


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` through a temp file in its own folder, fsync, then rename over it: a kill at
    any moment leaves the previous file or the new one, never part of one. (A temp file in the
    system temp dir, as Lightning's default uses, is copied rather than renamed when that is
    another filesystem, and a kill mid-copy truncates the target.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # and the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return path


def save_atomic(obj: object, path: Path) -> Path:
    """torch.save, atomically."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def copy_atomic(src: Path, dest: Path) -> Path:
    """Copy a file; `dest` is the old file or the whole copy, never part of it."""
    with open(src, "rb") as f:
        return atomic_write(dest, lambda out: shutil.copyfileobj(f, out, 1 << 20))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, saving through `save_atomic`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, Path(path))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint that a fit can resume from, or CheckpointError with the reason.
    Memory-mapped: loading reads the archive's index (a truncated file has none) and its pickle,
    not every tensor, so checking a multi-GB checkpoint is cheap."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        # Our own run directory's file, as Lightning itself loads it on resume.
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as exc:  # truncated, garbage, or not a torch archive at all
        raise CheckpointError(f"{path} does not load ({type(exc).__name__}: {str(exc)[:200]})") from exc
    missing = [k for k in _RESUME_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a resumable Lightning checkpoint (lacks {', '.join(missing)})")
    return ckpt


def checkpoint_files(ckpt: dict[str, Any]) -> list[str]:
    """The checkpoint files a checkpoint's ModelCheckpoint state names (best/top-k and last)."""
    names: set[str] = set()
    for st in _model_checkpoint_states(ckpt):
        names.update(p for p in (st.get("best_model_path"), st.get("last_model_path")) if p)
        names.update(st.get("best_k_models", {}))
    return sorted(names)


def relocate(ckpt: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Point the ModelCheckpoint state at `dest`, where the files it names were copied. Lightning
    restores the best score and the top-k bookkeeping only when the directory is unchanged;
    without them the first epoch after a resume would replace a better best checkpoint."""
    new_dir = os.path.realpath(dest)  # how ModelCheckpoint records its own dirpath

    def moved(p: str) -> str:
        return os.path.join(new_dir, os.path.basename(p)) if p else p

    for st in _model_checkpoint_states(ckpt):
        st["dirpath"] = new_dir
        for k in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if k in st:
                st[k] = moved(st[k])
        st["best_k_models"] = {moved(p): v for p, v in st.get("best_k_models", {}).items()}
    return ckpt


def _model_checkpoint_states(ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in ckpt.get("callbacks", {}).items() if k.startswith("ModelCheckpoint")]
