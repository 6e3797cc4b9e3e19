"""Datasets: find, download or decode them once, cache as uint8 npz, and serve normalized batches from memory.

A dataset is `<root>/<name>/{train,test}.npz` (uint8 x: N x H x W x C, y: class indices) with classes.txt, or image
folders `<root>/<name>/{train,test}/<class>/*`, or a built-in's official files. Messy data works or fails clearly:
- Names are plain folder names (letters, digits, . _ -); the data root must exist and is never created.
- Train defines the one class list (its sorted folder names, or classes.txt); test folders map onto it and may lack
  some classes, but a test class train lacks is an error. Dotfiles, dot-folders, __MACOSX, Thumbs.db are ignored.
- Image modes are converted: RGB if any image of the split is colour, else L (16-bit scaled to 8-bit, alpha
  dropped); load_dataset repeats a grey split to RGB when the other split is colour. An npz must hold 1 or 3
  channels (RGBA or others are an error naming the file).
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
import math
import os
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

BUILTIN = ("mnist", "cifar10", "svhn", "tiny-imagenet")
CACHE_VERSION = 2  # bump when decoding changes, so old caches of decoded sources are rebuilt
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ROOT_HINT = ("point the data root (the CLI's --data-root, the app's $MSCOMPARE_DATA_ROOT) at the folder that holds "
             "one folder per dataset; create it first")


class DatasetError(RuntimeError):
    """A dataset could not be found, downloaded or decoded; the message says what to do."""


class DatasetWarning(UserWarning):
    """Data was usable but something was left out (skip_bad=True skipped files)."""


def labels(y, num_classes: int | None, at: str = "") -> torch.Tensor:
    """1-D int64 class indices from y, or a DatasetError saying what is wrong with them (prefixed by `at`)."""
    a = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.dtype.kind not in "iuf":
        raise DatasetError(f"{at}labels must be integer class indices, got dtype {a.dtype}; map names to indices "
                           f"and list the names in classes.txt")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    elif a.ndim == 2:
        ok = ((a == 0) | (a == 1)).all(1) & (a.sum(1) == 1)
        if not ok.all():
            i = int(np.argmin(ok))
            raise DatasetError(f"{at}labels have shape {a.shape}; 2-D labels are read only as one-hot rows (one 1, "
                               f"the rest 0) and row {i} is {a[i][:12].tolist()}; store 1-D class indices instead")
        if num_classes is not None and a.shape[1] != num_classes:
            raise DatasetError(f"{at}one-hot labels have {a.shape[1]} columns but there are {num_classes} classes")
        a = a.argmax(1)
    elif a.ndim != 1:
        raise DatasetError(f"{at}labels must be 1-D class indices (N,), got shape {a.shape}")
    if a.dtype.kind == "f" and len(a):
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            i = int(np.argmax(bad))
            raise DatasetError(f"{at}label {a[i].item()} (index {i}) is not a whole number; labels are class "
                               f"indices")
    if len(a):
        lo, hi = a.min(), a.max()
        top = num_classes if num_classes is not None else 2 ** 31
        if lo < 0 or hi >= top:
            out = (a < 0) | (a >= top)
            i = int(np.argmax(out))
            raise DatasetError(f"{at}{int(out.sum())} label(s) outside 0..{top - 1}, e.g. {a[i].item()} at index {i}"
                               + (f"; there are {num_classes} classes: fix the labels or the class list (classes.txt)"
                                  if num_classes is not None else ""))
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


@dataclass
class ArrayData:
    """One split in memory: x uint8 (N, H, W, C), y int64 (N,), and class names in label order."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    source: str = ""  # where it came from, named in error messages
    skipped: list[str] = field(default_factory=list)  # "<file>: <why>" for each bad file skipped (skip_bad=True)

    def __post_init__(self):
        at = f"{self.source}: " if self.source else ""
        self.x = torch.as_tensor(self.x)
        if self.x.ndim != 4 or self.x.dtype != torch.uint8:
            raise DatasetError(f"{at}x must be uint8 N x H x W x C, got {tuple(self.x.shape)} {self.x.dtype}")
        if self.x.shape[3] > 4 and self.x.shape[1] in (1, 3, 4):
            raise DatasetError(f"{at}x {tuple(self.x.shape)} looks channels-first; store N x H x W x C "
                               f"(numpy: x.transpose(0, 2, 3, 1))")
        if self.x.shape[3] not in (1, 3):
            raise DatasetError(f"{at}x {tuple(self.x.shape)} has {self.x.shape[3]} channels; 1 (grey) or 3 (RGB) "
                               f"channels are supported" + (", so drop alpha (numpy: x[..., :3])"
                                                            if self.x.shape[3] == 4 else ""))
        self.classes = [str(c) for c in self.classes]
        self.y = labels(self.y, len(self.classes), at)
        if len(self.x) != len(self.y):
            raise DatasetError(f"{at}x has {len(self.x)} images but y has {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return self.x.shape[3], self.x.shape[1], self.x.shape[2]

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std (0..1 scale) over every image, from exact per-channel value histograms
        counted in chunks: CIFAR-10's train set takes about a second and ~50 MB, whatever its order."""
        if not len(self):
            raise DatasetError(f"{self.source or 'dataset'}: no images to compute normalization statistics from")
        c = self.x.shape[3]
        flat, offs = self.x.reshape(-1, c), torch.arange(c, dtype=torch.int32)
        counts = torch.zeros(256 * c, dtype=torch.int64)
        step = max(1, (1 << 22) // c)
        for i in range(0, len(flat), step):
            counts += torch.bincount((flat[i:i + step].int() * c + offs).flatten(), minlength=256 * c)
        cnt, v = counts.view(256, c).double(), torch.arange(256, dtype=torch.float64).view(256, 1) / 255
        n = cnt.sum(0)
        mean = (cnt * v).sum(0) / n
        var = ((cnt * v * v).sum(0) / n - mean ** 2).clamp_min(0) * n / (n - 1).clamp_min(1)
        return mean.tolist(), var.sqrt().tolist()

    def stratified(self, n: int, seed: int = 0) -> "ArrayData":
        """A class-balanced subset of about n items (the CIFAR-10 copy's test split is sorted by class)."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        k = max(1, n // len(self.classes))
        idx = [i[torch.randperm(len(i), generator=g)[:k]] for c in range(len(self.classes))
               if len(i := (self.y == c).nonzero().flatten())]
        idx = torch.cat(idx).sort().values
        return replace(self, x=self.x[idx], y=self.y[idx])


def read_classes(path: Path) -> list[str]:
    names = [c.strip() for c in path.read_text().splitlines() if c.strip()]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DatasetError(f"{path} lists {', '.join(map(repr, dup[:5]))} more than once; one class per line")
    return names


def numeric_classes(y, where: Path) -> list[str]:
    """Class names "0".."k" for labels without a classes.txt."""
    t = labels(y, None, f"{where}: ")
    n = int(t.max()) + 1 if len(t) else 0
    if n > 100_000:
        raise DatasetError(f"{where}: label {n - 1} would mean {n} classes; check the labels or add classes.txt")
    return [str(i) for i in range(n)]


def _memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS doesn't say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _check_member(path: Path, zf: zipfile.ZipFile, key: str) -> None:
    """Check the .npy header behind `key` before numpy allocates its array: a header that claims more data than
    the member stores, or more than this machine's memory, is an error naming the claimed shape."""
    name = f"{key}.npy" if f"{key}.npy" in zf.namelist() else key
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        stored = zf.getinfo(name).file_size - f.tell()
    if dtype.hasobject:  # pickled objects: numpy itself refuses them (allow_pickle=False)
        return
    need, mem = math.prod(shape) * dtype.itemsize, _memory()
    what = f"{path}: '{key}' claims shape {shape} {dtype} ({need:,} bytes)"
    if need > stored:
        raise DatasetError(f"{what} but stores only {stored:,} bytes; the file is damaged or was not written by "
                           f"numpy.savez, so write it again")
    if mem is not None and need > mem:
        raise DatasetError(f"{what}, more than this machine's {mem:,} bytes of memory; use a smaller subset")


def _read_npz(path: Path, z, keys) -> list[np.ndarray]:
    """The arrays `keys` of an open NpzFile, each checked from its header first."""
    with z:
        missing = [k for k in keys if k not in z.files]
        if missing:
            raise KeyError(f"it has arrays {z.files}, missing {missing}")
        for k in keys:
            _check_member(path, z.zip, k)
        return [z[k] for k in keys]


def _open_npz(path: Path, keys=("x", "y")) -> list[np.ndarray]:
    try:
        with open(path, "rb") as f:  # our own handle: np.load leaks its own when a zip fails to open
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError(f"it holds a single {type(z).__name__}, not named arrays")
            return _read_npz(path, z, keys)
    except MemoryError as e:
        raise DatasetError(f"{path}: not enough memory to load its arrays; use a smaller subset") from e
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise DatasetError(f"{path} is not a valid dataset npz (needs uint8 'x' N x H x W x C and 'y' class "
                           f"indices): {e}") from e


def load_npz(path: Path, classes: list[str] | None = None) -> ArrayData:
    """One split from an npz; classes default to classes.txt beside it, else "0".."max label"."""
    x, y = _open_npz(path)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8:
        raise DatasetError(f"{path}: 'x' must be uint8 (0..255), got {x.dtype}; convert with "
                           f"np.clip(x * 255, 0, 255).round().astype(np.uint8) if it is 0..1 floats")
    if classes is None:
        cfile = path.parent / "classes.txt"
        classes = read_classes(cfile) if cfile.is_file() else numeric_classes(y, path)
    return ArrayData(torch.from_numpy(x), y, classes, source=str(path))


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
    from mscompare import loaders

    if (d / "train").is_dir():
        return loaders.visible_dirs(d / "train")
    if (d / "classes.txt").is_file():
        return read_classes(d / "classes.txt")
    if (d / "train.npz").is_file():
        return numeric_classes(_open_npz(d / "train.npz", ("y",))[0], d / "train.npz")
    return None


def load_split(name: str, root: str | Path = "data", train: bool = True, download: bool = True, *,
               skip_bad: bool = False, size: int | None = None) -> ArrayData:
    """Load one split of `name` from `root`: the npz cache `<root>/<name>/{train,test}.npz` while it matches its
    source, else decode (and cache) image folders, the Tiny ImageNet layout or a built-in's official files.

    skip_bad: skip corrupt, non-image or unlabelled files instead of failing (listed in .skipped).
    size: resize every decoded image to size x size instead of requiring one square size.
    """
    from mscompare import loaders

    root, d = _location(name, root)
    split = "train" if train else "test"
    cache = d / f"{split}.npz"
    src = loaders.source(name, root, d, train)
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
        data, src = loaders.decode_split(name, root, d, src, train, download, size, skip_bad)
        extra["classes"] = src[3]
        meta = {"fingerprint": loaders.fingerprint(src[2], src[1].parent, extra), "source": str(src[1]),
                "options": {"size": size, "skip_bad": skip_bad}, "classes": data.classes,
                "skipped": data.skipped, "shape": list(data.shape), "images": len(data)}
        with contextlib.suppress(OSError):  # a read-only root (such as ../shared/datasets) just isn't cached
            save_npz(cache, data, meta)
    _check(data, name, split, size)
    return data


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
