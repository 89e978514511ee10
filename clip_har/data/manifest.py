"""The one manifest schema and its builders (generator, image folder, CSV).

A dataset is a directory (the data root) holding `manifest.csv` and the images it names by
path relative to the root. Builders copy sources into a fresh root so the whole thing can be
versioned by DVC as one directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from clip_har.config import DEFAULT_SPLITS

MANIFEST = "manifest.csv"
COLUMNS: tuple[str, ...] = ("path", "label", "split", "sha256", "width", "height", "caption", "source")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
# A label names a folder under images/: a letter or digit, then letters, digits, _ - and . (as in
# "001.ak47"), so none can be "..", absolute, or climb out of the root.
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_label(label: object, where: str) -> str:
    """`label` if it is a class name, else ValueError naming `where` (a row or a folder)."""
    if not isinstance(label, str) or not CLASS_NAME.fullmatch(label):
        raise ValueError(
            f"{where}: label {label!r} is not a class name (a letter or digit, then letters, digits, _ - or .;"
            " at most 64 characters)"
        )
    return label


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header, or (0, 0) when the file is not a readable image."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # any decoder failure means "not an image"; the gate reports it
        return (0, 0)


def stratified_split(labels: Sequence[str], fractions: Sequence[float], seed: int) -> list[str]:
    """Assign train/val/test per class in the given proportions, deterministically by seed."""
    if len(fractions) != len(SPLITS) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three numbers summing to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for label in sorted(by_class):
        idx = np.array(by_class[label])
        rng.shuffle(idx)
        n = len(idx)
        n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
        n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
        for k, i in enumerate(idx):
            out[i] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return out


def read_manifest(root: Path) -> pd.DataFrame:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in data root {root}")
    return pd.read_csv(path, dtype={"path": str, "label": str, "split": str, "sha256": str, "caption": str})


def write_manifest(df: pd.DataFrame, root: Path) -> Path:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    path = Path(root) / MANIFEST
    tmp = path.with_suffix(".csv.tmp")
    df.loc[:, list(COLUMNS)].to_csv(tmp, index=False)
    os.replace(tmp, path)  # atomic: readers never see half a manifest
    return path


@contextmanager
def staged_dir(dest: Path) -> Iterator[Path]:
    """Build a directory beside `dest` and swap it in only when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe_files(root: Path, rows: list[dict[str, str]]) -> pd.DataFrame:
    """Fill sha256/width/height for rows whose `path` is relative to `root`."""
    for row in rows:
        f = root / row["path"]
        row["sha256"] = sha256_file(f) if f.is_file() else ""
        row["width"], row["height"] = image_size(f) if f.is_file() else (0, 0)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _copy_in(src: Path, root: Path, label: str, index: int) -> str:
    rel = Path("images") / label / f"{index:06d}{src.suffix.lower()}"
    (root / rel.parent).mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, root / rel)
    return rel.as_posix()


def class_folder_files(src: Path, suffixes: set[str] | None = None) -> list[Path]:
    """The files of an image folder with one sub-folder per class (`src/<label>/<file>`), sorted;
    hidden files and sub-folders (.ipynb_checkpoints, ._x.jpg) are skipped, and every sub-folder
    name must be a class name. `suffixes`: only files with these (lower-case) suffixes."""
    files = sorted(
        f
        for f in Path(src).glob("*/*")
        if f.is_file()
        and not f.name.startswith(".")
        and not f.parent.name.startswith(".")
        and (suffixes is None or f.suffix.lower() in suffixes)
    )
    for folder in sorted({f.parent for f in files}):
        check_label(folder.name, f"sub-folder {folder}")
    return files


def from_folder(src: Path, dest: Path, fractions: Sequence[float] = DEFAULT_SPLITS, seed: int = 0) -> Path:
    """An image folder with one sub-folder per class → a data root at `dest`."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"image folder {src} does not exist")
    files = class_folder_files(src)
    if not files:
        raise ValueError(f"image folder {src} has no files in class sub-folders")
    with staged_dir(dest) as root:
        rows = [
            {
                "path": _copy_in(f, root, f.parent.name, i),
                "label": f.parent.name,
                "caption": "",
                "source": f"folder:{f}",
            }
            for i, f in enumerate(files)
        ]
        df = describe_files(root, rows)
        df["split"] = stratified_split(df["label"].tolist(), fractions, seed)
        write_manifest(df, root)
    return Path(dest)


def _csv_sources(csv: Path, table: pd.DataFrame, allow_outside: bool) -> list[Path]:
    """Each row's file, checked before anything is written: a class-name label, an existing file,
    and (unless `allow_outside`) a path inside the CSV's folder. Errors name the row."""
    home, files = csv.parent.resolve(), []
    for i, rec in enumerate(table.to_dict("records")):
        where = f"{csv} row {i + 2}"  # the header is row 1
        check_label(rec["label"], where)
        f = (csv.parent / rec["path"]).resolve()  # an absolute path stays itself
        if not allow_outside and not f.is_relative_to(home):
            raise ValueError(
                f"{where}: {rec['path']} is outside the CSV's folder {home}"
                " (allow it: --allow-outside, or data.allow_outside=true in the profile)"
            )
        if not f.is_file():
            raise FileNotFoundError(f"{where}: file {rec['path']} does not exist")
        files.append(f)
    return files


def from_csv(
    csv: Path, dest: Path, fractions: Sequence[float] = DEFAULT_SPLITS, seed: int = 0, allow_outside: bool = False
) -> Path:
    """A CSV with `path,label[,split][,caption]` (paths relative to the CSV) → a data root.
    `allow_outside`: rows may name files outside the CSV's folder."""
    csv = Path(csv)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)  # a class may be called "None" or "NA"
    for col in ("path", "label"):
        if col not in table.columns:
            raise ValueError(f"{csv}: column {col!r} is required (have {list(table.columns)})")
    files = _csv_sources(csv, table, allow_outside)
    with staged_dir(dest) as root:
        rows = []
        for i, (f, rec) in enumerate(zip(files, table.to_dict("records"), strict=True)):
            rows.append(
                {
                    "path": _copy_in(f, root, rec["label"], i),
                    "label": rec["label"],
                    "caption": rec.get("caption", ""),
                    "source": f"csv:{f}",
                }
            )
        df = describe_files(root, rows)
        given = table.get("split")
        has_split = given is not None and bool((given != "").all())
        df["split"] = given.tolist() if has_split else stratified_split(df["label"].tolist(), fractions, seed)
        write_manifest(df, root)
    return Path(dest)
