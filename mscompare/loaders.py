"""Readers of on-disk formats (image folders, the Tiny ImageNet layout, torchvision's files) and source fingerprints."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import torch

from mscompare import images
from mscompare.arrays import ArrayData, DatasetError

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # ignored like dotfiles: OS and archive leftovers
TINY_DIR = "tiny-imagenet-200"
SKIP_HINT = ("remove or replace it, or set the skip-bad-files option (--skip-bad, skip_bad=True) to skip bad files "
             "and count them")


class BadFile(Exception):
    """One file that can't be used; the loader raises it as a DatasetError or, with skip_bad, skips it."""


def hidden_name(name: str) -> bool:
    return name.startswith(".") or name in JUNK


def visible_dirs(d: Path) -> list[str]:
    """The visible folders in d, symlinked ones included."""
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not hidden_name(p.name))


def visible_files(d: Path) -> list[Path]:
    """Every visible file under d, following symlinked folders (a class folder may link elsewhere); a link to a
    folder that the walk is already inside is not followed, so link loops end."""
    files, inside = [], {os.fspath(d): {os.path.realpath(d)}}
    for top, dirs, names in os.walk(d, followlinks=True):
        above = inside.pop(top)
        dirs[:] = [n for n in dirs if not hidden_name(n) and os.path.realpath(os.path.join(top, n)) not in above]
        inside.update({os.path.join(top, n): above | {os.path.realpath(os.path.join(top, n))} for n in dirs})
        files += [Path(top, n) for n in names if not hidden_name(n) and os.path.isfile(os.path.join(top, n))]
    return sorted(files)


def fingerprint(paths: list[Path], base: Path, extra) -> str:
    """A hash of the sorted relative paths, sizes and mtimes of the visible files in `paths`, plus `extra`."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for p in paths:
        files = [p] if p.is_file() else visible_files(p) if p.is_dir() else []
        h.update(f"{p.relative_to(base)}:{len(files)}\n".encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(base)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def decode(path: Path, size: int | None) -> np.ndarray:
    """uint8 H x W (grey modes) or H x W x 3 (colour modes), by images.normalize's one rule per mode."""
    if path.suffix.lower() not in IMAGE_EXTS:
        raise BadFile(f"not an image file (extension {path.suffix or 'none'!r}; images are "
                      f"{', '.join(sorted(IMAGE_EXTS))})")
    try:
        return images.pixels(images.open_image(path, formats=None, max_bytes=None), size)
    except images.ImageError as e:
        raise BadFile(f"cannot be decoded as an image ({e})") from e


def collect(items: list[tuple[Path, int]], classes: list[str], where: Path, size: int | None, skip_bad: bool,
            skipped: list[str]) -> ArrayData:
    """Decode (file, label) pairs into one ArrayData: RGB if any image is colour, else L; one square size."""
    images, labels, files = [], [], []
    for f, label in items:
        try:
            images.append(decode(f, size))
        except BadFile as e:
            if not skip_bad:
                raise DatasetError(f"{f}: {e}; {SKIP_HINT}") from None
            skipped.append(f"{f.relative_to(where)}: {e}")
            continue
        labels.append(label)
        files.append(f)
    if not images:
        raise DatasetError(f"no usable images under {where}" + (f" ({len(skipped)} skipped as bad)" if skipped else ""))
    sizes: dict[tuple[int, int], list] = {}
    for a, f in zip(images, files):
        sizes.setdefault(a.shape[:2], []).append(f)
    h, w = next(iter(sizes))
    if len(sizes) > 1 or h != w:
        found = "; ".join(f"{hh}x{ww} (height x width): {len(fs)} files, e.g. {fs[0].relative_to(where)}"
                          for (hh, ww), fs in sorted(sizes.items(), key=lambda kv: -len(kv[1])))
        raise DatasetError(f"images under {where} must all have one square size, but found {found}. Resize the files "
                           f"to one size, or set the image size option (--image-size S, size=S) to resize every image to SxS "
                           f"on load (bilinear, aspect ratio not kept). Channels never need fixing: grey and colour "
                           f"images are converted to RGB when any is colour.")
    c = 3 if any(a.ndim == 3 for a in images) else 1
    x = np.empty((len(images), h, w, c), np.uint8)
    for i, a in enumerate(images):
        x[i] = a if a.ndim == 3 else a[..., None]  # broadcasting repeats a grey image into RGB when c == 3
    return ArrayData(torch.from_numpy(x), torch.tensor(labels, dtype=torch.long), classes, source=str(where),
                     skipped=skipped)


def image_folder(split_dir: Path, classes: list[str] | None, size: int | None, skip_bad: bool) -> ArrayData:
    """`<split>/<class>/**/<image>` -> ArrayData. Train (classes=None) takes the sorted folder names as classes;
    the test split maps its folders onto the given train classes and may lack some of them."""
    train = classes is None
    folders = visible_dirs(split_dir)
    classes = folders if train else classes
    unknown = [c for c in folders if c not in classes]
    if unknown:
        more = " ..." if len(classes) > 20 else ""
        raise DatasetError(f"{split_dir}: class folder(s) {', '.join(map(repr, unknown))} are not among the "
                           f"{len(classes)} train classes ({', '.join(classes[:20])}{more}); the train split "
                           f"defines the classes, so rename or remove them, or add them to train")
    items, skipped, index = [], [], {c: i for i, c in enumerate(classes)}
    for f in visible_files(split_dir):
        rel = f.relative_to(split_dir)
        if len(rel.parts) < 2:
            if not skip_bad:
                raise DatasetError(f"{f}: a file directly in {split_dir} belongs to no class; move it into "
                                   f"{split_dir}/<class>/, or {SKIP_HINT}")
            skipped.append(f"{rel}: not inside a class folder")
        else:
            items.append((f, index[rel.parts[0]]))
    data = collect(items, classes, split_dir, size, skip_bad, skipped)
    if train:
        empty = [c for i, c in enumerate(classes) if not (data.y == i).any()]
        if empty:
            raise DatasetError(f"{split_dir}: train class folder(s) {', '.join(map(repr, empty))} hold no usable "
                               f"images; add images or remove the folder(s)")
    return data


def tiny_candidates(root: Path) -> list[Path]:
    d = root / "tiny-imagenet"
    return [d / TINY_DIR, d / "raw" / TINY_DIR, root / TINY_DIR, d]


def tiny_base(root: Path) -> Path | None:
    """The first unpacked official Tiny ImageNet folder (it holds wnids.txt or val/val_annotations.txt)."""
    for c in tiny_candidates(root):
        if (c / "wnids.txt").is_file() or (c / "val" / "val_annotations.txt").is_file():
            return c
    return None


def tiny_classes(base: Path) -> tuple[list[str], list[str]]:
    """(wnids sorted as the train folders, display names from words.txt); checks wnids.txt against train/."""
    wfile = base / "wnids.txt"
    if not wfile.is_file():
        raise DatasetError(f"{wfile} is missing; the official Tiny ImageNet layout needs it (one wnid per line)")
    if not (base / "train").is_dir():
        raise DatasetError(f"{base / 'train'} is missing; the Tiny ImageNet layout is train/<wnid>/images/*.JPEG")
    listed = [w for w in wfile.read_text().split() if w]
    folders = visible_dirs(base / "train")
    dup = sorted({w for w in listed if listed.count(w) > 1})
    extra, missing = sorted(set(folders) - set(listed)), sorted(set(listed) - set(folders))
    if dup or extra or missing:
        raise DatasetError(
            f"{wfile} does not match {base / 'train'}/: it lists {len(listed)} wnids for {len(folders)} train folders"
            + (f"; train folders not in wnids.txt: {', '.join(extra[:10])}" if extra else "")
            + (f"; wnids with no train folder: {', '.join(missing[:10])}" if missing else "")
            + (f"; listed twice: {', '.join(dup[:10])}" if dup else "")
            + ". Restore the official wnids.txt (one line per train/<wnid>/ folder).")
    words = {}
    if (base / "words.txt").is_file():
        for line in (base / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in folders]
    names = [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, folders)]
    return folders, names


def tiny_sources(base: Path, train: bool) -> list[Path]:
    return [base / "wnids.txt", base / "words.txt", base / ("train" if train else "val")]


def tiny_imagenet(base: Path, train: bool, size: int | None, skip_bad: bool) -> ArrayData:
    """The official layout: train/<wnid>/images/*, and val/images + val_annotations.txt as the test split.
    The unlabelled test/ folder is never read. Classes are the sorted wnids (the train folders)."""
    wnids, names = tiny_classes(base)
    index = {w: i for i, w in enumerate(wnids)}
    items, skipped = [], []
    if train:
        for w in wnids:
            items += [(f, index[w]) for f in visible_files(base / "train" / w / "images")]
        where = base / "train"
    else:
        where, ann = base / "val", base / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DatasetError(f"{ann} is missing; the Tiny ImageNet test split is val/images labelled by it")
        named = set()
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            parts = line.split("\t") if "\t" in line else line.split()
            if not line.strip():
                continue
            if len(parts) < 2:
                raise DatasetError(f"{ann} line {n}: expected '<file>\\t<wnid>\\t...', got {line[:80]!r}")
            if parts[1] not in index:
                raise DatasetError(f"{ann} line {n}: wnid {parts[1]!r} is not in {base / 'wnids.txt'} / train/")
            f = where / "images" / parts[0]
            named.add(f)
            if f.is_file():
                items.append((f, index[parts[1]]))
            elif skip_bad:
                skipped.append(f"images/{parts[0]}: listed in val_annotations.txt but missing")
            else:
                raise DatasetError(f"{f} is listed in {ann} line {n} but missing; {SKIP_HINT}")
        for f in visible_files(where / "images") if (where / "images").is_dir() else []:
            if f not in named:
                if not skip_bad:
                    raise DatasetError(f"{f} has no label in {ann}; add its line, or {SKIP_HINT}")
                skipped.append(f"{f.relative_to(where)}: no line in val_annotations.txt")
    data = collect(items, names, where, size, skip_bad, skipped)
    if train and len(set(data.y.tolist())) < len(wnids):
        empty = [w for w in wnids if not (data.y == index[w]).any()]
        raise DatasetError(f"{base / 'train'}: no usable images for {', '.join(empty[:10])} (train/<wnid>/images/)")
    return data


def _mnist(raw: Path, train: bool, download: bool) -> ArrayData:
    from torchvision import datasets as tvd

    ds = tvd.MNIST(raw, train=train, download=download)
    return ArrayData(ds.data.unsqueeze(-1).contiguous(), ds.targets, [str(i) for i in range(10)], source=str(raw))


def _cifar10(raw: Path, train: bool, download: bool) -> ArrayData:
    from torchvision import datasets as tvd

    ds = tvd.CIFAR10(raw, train=train, download=download)
    return ArrayData(torch.from_numpy(ds.data), torch.tensor(ds.targets), list(ds.classes), source=str(raw))


def _svhn(raw: Path, train: bool, download: bool) -> ArrayData:
    from torchvision import datasets as tvd

    ds = tvd.SVHN(raw, split="train" if train else "test", download=download)  # labels 0-9 (torchvision maps 10 -> 0)
    x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)))
    return ArrayData(x, torch.from_numpy(ds.labels.astype(np.int64)), [str(i) for i in range(10)], source=str(raw))


class TorchvisionFiles:
    """A built-in's official files in `<root>/<name>/raw`, read (and downloaded) by a torchvision dataset class."""

    def __init__(self, read):
        self.read = read

    def locate(self, root: Path, d: Path, train: bool) -> tuple[Path, list[Path]] | None:
        """(folder, files to fingerprint) of the files already here, or None."""
        return (d / "raw", [d / "raw"]) if (d / "raw").is_dir() else None

    def where(self, root: Path, d: Path) -> str:
        return f"the official files under {d / 'raw'}"

    def load(self, root: Path, d: Path, train: bool, download: bool, size, skip_bad: bool) -> ArrayData:
        return self.read(d / "raw", train, download)


class TinyImageNetFiles:
    """The official Tiny ImageNet layout (see tiny_imagenet), unpacked in one of tiny_candidates or downloaded."""

    def locate(self, root: Path, d: Path, train: bool) -> tuple[Path, list[Path]] | None:
        base = tiny_base(root)
        return (base, tiny_sources(base, train)) if base else None

    def where(self, root: Path, d: Path) -> str:
        return ", ".join(f"{c}/wnids.txt" for c in tiny_candidates(root))

    def load(self, root: Path, d: Path, train: bool, download: bool, size, skip_bad: bool) -> ArrayData:
        base = tiny_base(root)
        if base is None:
            if not download:
                raise FileNotFoundError("no unpacked tiny-imagenet-200 folder")
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(TINY_URL, str(root / "tiny-imagenet" / "raw"))
            base = root / "tiny-imagenet" / "raw" / TINY_DIR
        return tiny_imagenet(base, train, size, skip_bad)


MNIST, CIFAR10, SVHN, TINY_IMAGENET = (TorchvisionFiles(_mnist), TorchvisionFiles(_cifar10), TorchvisionFiles(_svhn),
                                      TinyImageNetFiles())


@contextlib.contextmanager
def net_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)
