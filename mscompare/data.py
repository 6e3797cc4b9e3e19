"""Datasets: find, download or decode them once, cache as uint8 npz, and serve normalized batches from memory.

A dataset is `<root>/<name>/{train,test}.npz` (uint8 x: N x H x W x C, y: class indices) with classes.txt, or image
folders `<root>/<name>/{train,test}/<class>/*`, or a built-in's official files (its loader in the
registry, mscompare.datasets). Messy data works or fails clearly:
- Names are plain folder names (letters, digits, . _ -); the data root must exist and is never created.
- Train defines the one class list (its sorted folder names, or classes.txt); test folders map onto it and may lack
  some classes, but a test class train lacks is an error. Dotfiles, dot-folders, __MACOSX, Thumbs.db are ignored.
- Image modes follow mscompare.images' one rule per mode (alpha onto white, 16-bit scaled, float refused), the
  same as for uploads. A split is RGB if any of its images is colour, else L; load_dataset repeats a grey split
  to RGB when the other split is colour. An npz must hold 1 or 3 channels (RGBA or others are an error naming
  the file).
- Sizes: all images must share one square size, else the error lists the sizes found (count and an example file
  each); `size=S` resizes every decoded image to SxS instead (bilinear, aspect ratio not kept).
- A corrupt, non-image or unlabelled file is an error naming it; `skip_bad=True` skips such files, lists them in
  ArrayData.skipped (kept in the cache sidecar) and warns with DatasetWarning.
- Labels, on every path (ArrayData.__post_init__): 1-D integers in [0, classes). (N, 1) is squeezed, valid one-hot
  rows (N, C) become their index, whole-number floats become ints; anything else is an error.
- Decoded splits are cached atomically with `<split>.source.json`: a fingerprint of the source files (relative
  paths, sizes, mtimes) and the options. A changed source or option rebuilds the cache; an npz with no source
  folder (user-supplied, e.g. ../shared/datasets) is used as is. Only the train split writes classes.txt. A cache
  or sidecar that can't be read (truncated, corrupt, edited) is rebuilt from its source.
- An empty split or fewer than 2 classes is an error.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mscompare import datasets, loaders
from mscompare.arrays import (ROOT_HINT, ArrayData, DatasetError, DatasetWarning, load_npz, numeric_classes,
                              open_npz, read_classes)

__all__ = ["ArrayData", "Batches", "DatasetError", "DatasetWarning", "load_dataset", "load_split", "load_npz",
           "save_npz", "train_classes"]
CACHE_VERSION = 3  # bump when decoding changes, so old caches of decoded sources are rebuilt
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _sidecar(cache: Path) -> Path:
    return cache.with_name(cache.name.removesuffix(".npz") + ".source.json")


def _read_sidecar(cache: Path) -> dict:
    """The cache's source sidecar, or {} (so the cache is rebuilt) when it is missing, unreadable or incomplete."""
    try:
        side = json.loads(_sidecar(cache).read_text())
    except (OSError, ValueError):
        return {}
    ok = (isinstance(side, dict) and isinstance(side.get("classes"), list)
          and isinstance(side.setdefault("skipped", []), list))
    return side if ok else {}


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npz(path: Path, data: ArrayData, meta: dict | None = None) -> None:
    """Write a split atomically (temp file, then rename) and then its source sidecar; a failure leaves no partial
    cache. meta (the source fingerprint) goes to `<split>.source.json`; a train split with meta writes classes.txt."""
    path.parent.mkdir(exist_ok=True)  # the dataset folder only: the data root itself must already exist
    _sidecar(path).unlink(missing_ok=True)  # an old sidecar must never vouch for a new npz
    _atomic_write(path, lambda f: np.savez_compressed(f, x=data.x.numpy(), y=data.y.numpy()))
    if meta is not None:
        _atomic_write(_sidecar(path), lambda f: f.write(json.dumps(meta, indent=1).encode()))
        if path.name == "train.npz":
            _atomic_write(path.parent / "classes.txt", lambda f: f.write(("\n".join(data.classes) + "\n").encode()))


def _location(name: str, root) -> tuple[Path, Path]:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise DatasetError(f"dataset name {name!r} is not allowed: a dataset name is one folder name under the data "
                           f"root, made of letters, digits, '.', '_' and '-', not starting with '.' and without "
                           f"path separators. To use another folder, {ROOT_HINT}.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data root {root} {'is not a folder' if root.exists() else 'does not exist'} (it is "
                           f"never created for you): create it, or {ROOT_HINT}")
    return root, root / name


def train_classes(d: Path) -> list[str] | None:
    """The dataset's class list as train defines it, for decoding or reading the test split."""
    if (d / "train").is_dir():
        return loaders.visible_dirs(d / "train")
    if (d / "classes.txt").is_file():
        return read_classes(d / "classes.txt")
    if (d / "train.npz").is_file():
        return numeric_classes(open_npz(d / "train.npz", ("y",))[0], d / "train.npz")
    return None


def load_split(name: str, root: str | Path = "data", train: bool = True, download: bool = True, *,
               skip_bad: bool = False, size: int | None = None) -> ArrayData:
    """Load one split of `name` from `root`: the npz cache `<root>/<name>/{train,test}.npz` while it matches its
    source, else decode (and cache) image folders, the Tiny ImageNet layout or a built-in's official files.

    skip_bad: skip corrupt, non-image or unlabelled files instead of failing (listed in .skipped).
    size: resize every decoded image to size x size instead of requiring one square size.
    """
    root, d = _location(name, root)
    split = "train" if train else "test"
    cache = d / f"{split}.npz"
    src = _source(name, root, d, train)
    extra = {"version": CACHE_VERSION, "size": size, "skip_bad": skip_bad, "classes": src and src[3]}
    data = None
    if cache.is_file() and src is None:
        data = load_npz(cache, None if train else train_classes(d))
    elif cache.is_file():
        side = _read_sidecar(cache)
        if side.get("fingerprint") == loaders.fingerprint(src[2], src[1].parent, extra):
            with contextlib.suppress(DatasetError):  # an unreadable cache of a known source is rebuilt
                data = load_npz(cache, side["classes"])
                data.skipped = side["skipped"]
    if data is None:
        data, src = _decode_split(name, root, d, src, train, download, size, skip_bad)
        extra["classes"] = src[3]
        meta = {"fingerprint": loaders.fingerprint(src[2], src[1].parent, extra), "source": str(src[1]),
                "options": {"size": size, "skip_bad": skip_bad}, "classes": data.classes,
                "skipped": data.skipped, "shape": list(data.shape), "images": len(data)}
        with contextlib.suppress(OSError):  # a read-only root (such as ../shared/datasets) just isn't cached
            save_npz(cache, data, meta)
    _check(data, name, split, size)
    return data


def _source(name: str, root: Path, d: Path, train: bool):
    """(kind, folder, files to fingerprint, test-split class list) of the split's decodable source, or None.
    A built-in's official files come first (Tiny ImageNet's layout may be the dataset folder itself)."""
    split, spec = ("train" if train else "test"), datasets.get(name)
    if spec and spec.loader and (found := spec.loader.locate(root, d, train)):
        return "official", found[0], found[1], None
    if (d / split).is_dir():
        return "folder", d / split, [d / split], None if train else train_classes(d)
    return None


def _decode_split(name: str, root: Path, d: Path, src, train: bool, download: bool, size, skip_bad: bool):
    """Decode the split from its source (downloading a built-in's official files when allowed): (data, source)."""
    split, spec = ("train" if train else "test"), datasets.get(name)
    cache = d / f"{split}.npz"
    if src and src[0] == "folder":
        return loaders.image_folder(src[1], src[3], size, skip_bad), src
    if spec is None or spec.loader is None:
        raise DatasetError(
            f"dataset {name!r} not found: looked for {cache} and {d / split}/<class>/*. A user dataset is either "
            f"{d}/train.npz + test.npz (uint8 x: N x H x W x C, y: labels) or image folders "
            f"{d}/train/<class>/ and {d}/test/<class>/; built-ins are {', '.join(datasets.list_datasets())}.")
    try:
        with loaders.net_timeout(15):
            data = spec.loader.load(root, d, train, download, size, skip_bad)
    except DatasetError:
        raise
    except Exception as e:  # missing files, no network, corrupt archive: one clear message
        raise DatasetError(
            f"dataset {name!r} ({split}) is not available: looked for {cache}, {d / split}/<class>/ and "
            f"{spec.loader.where(root, d)}, and {'the download failed' if download else 'downloading is off'} "
            f"({type(e).__name__}: {' '.join(str(e).split())[:200]}). Supply it by placing {split}.npz (uint8 x: N x H x W x C, "
            f"y: labels) and classes.txt in {d}, or the official files there, or {ROOT_HINT}.") from e
    found = spec.loader.locate(root, d, train)
    return data, ("official", *found, None) if found else src


def _check(data: ArrayData, name: str, split: str, size: int | None) -> None:
    c, h, w = data.shape
    if not len(data):
        raise DatasetError(f"dataset {name!r}: the {split} split ({data.source}) has 0 images")
    if len(data.classes) < 2:
        raise DatasetError(f"dataset {name!r} has {len(data.classes)} class(es) {data.classes} ({data.source}); "
                           f"a classifier needs at least 2 (one folder or classes.txt line per class)")
    if size and (h, w) != (size, size):
        raise DatasetError(f"{data.source}: images are {h}x{w}, not the requested size={size}; size= only resizes "
                           f"images decoded from files, so resize this npz yourself or leave size unset")
    if h != w:
        raise DatasetError(f"{data.source}: images are {h}x{w} (height x width) but the models need square images; "
                           f"for image folders set the image size option (--image-size S, size=S) to resize on load, "
                           f"for an npz crop or resize x")
    if data.skipped:
        warnings.warn(f"{name} {split}: skipped {len(data.skipped)} bad file(s) (skip_bad=True), e.g. "
                      f"{data.skipped[0]}; see .skipped", DatasetWarning, stacklevel=3)


def load_dataset(name: str, root: str | Path = "data", download: bool = True, *, skip_bad: bool = False,
                 size: int | None = None) -> tuple[ArrayData, ArrayData]:
    """(train, test) of `name`, sharing train's class list and one image shape (see load_split)."""
    train = load_split(name, root, True, download, skip_bad=skip_bad, size=size)
    test = load_split(name, root, False, download, skip_bad=skip_bad, size=size)
    if test.classes != train.classes:
        if test.classes != train.classes[:len(test.classes)]:  # only a shorter numeric list may be widened
            raise DatasetError(f"{name}: the test split's classes {test.classes[:10]} differ from train's "
                               f"{train.classes[:10]}; train defines the one class list (classes.txt)")
        test = replace(test, classes=train.classes)
    if {train.shape[0], test.shape[0]} == {1, 3}:  # documented: a grey split joins a colour one as RGB
        train, test = [s if s.shape[0] == 3 else replace(s, x=s.x.expand(-1, -1, -1, 3).contiguous())
                       for s in (train, test)]
    if train.shape != test.shape:
        raise DatasetError(f"{name}: train images are {train.shape} (C, H, W) but test images are {test.shape}; "
                           f"resize one split to match, or set the image size option (--image-size S, size=S) to resize "
                           f"image folders on load")
    return train, test


class Batches:
    """Normalized float batches from uint8 data, made whole-batch on the target device, channels_last."""

    def __init__(self, data: ArrayData, mean, std, device: torch.device, augment: bool = False, seed: int = 0):
        self.x = data.x.to(device)  # stays uint8 NHWC
        self.y = data.y.to(device)
        self.device, self.augment = device, augment
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.seed, self.device_gen = seed, None  # flips draw on the batch's own device

    def prep(self, xb: torch.Tensor) -> torch.Tensor:
        # NHWC uint8 -> permuted view is NCHW with channels_last strides; float() keeps that layout.
        return (xb.permute(0, 3, 1, 2).float() - self.mean) / self.std

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random 4-pixel-padded crop per batch-quarter, and horizontal flips for 3-channel images. Slices and
        torch.where only: no host-device sync, so it can run inside a captured CUDA graph step."""
        n, c, h, w = x.shape
        xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
        out = torch.empty_like(x)
        bounds = [round(n * k / 4) for k in range(5)]
        offsets = torch.randint(0, 9, (4, 2), generator=self.gen).tolist()  # host-side values: no sync
        for (lo, hi), (dy, dx) in zip(zip(bounds, bounds[1:]), offsets):
            out[lo:hi] = xp[lo:hi, :, dy:dy + h, dx:dx + w]
        if c == 3:
            if self.device_gen is None:
                self.device_gen = torch.Generator(device=x.device).manual_seed(self.seed)
            flip = torch.rand(n, 1, 1, 1, device=x.device, generator=self.device_gen) < 0.5
            out = torch.where(flip, out.flip(3), out)
        return out

    def train_batches(self, batch_size: int):
        """Endless shuffled batches (reshuffled each epoch)."""
        n = len(self.y)
        while True:
            perm = torch.randperm(n, generator=self.gen).to(self.device)
            for i in range(0, n - batch_size + 1, batch_size):
                idx = perm[i:i + batch_size]
                x = self.prep(self.x[idx])
                yield (self._augment(x) if self.augment else x), self.y[idx]

    def eval_batches(self, batch_size: int = 1000):
        for i in range(0, len(self.y), batch_size):
            yield self.prep(self.x[i:i + batch_size]), self.y[i:i + batch_size]
