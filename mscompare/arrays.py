"""One split in memory (ArrayData), the label rules every format shares, and the dataset npz format."""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

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


def open_npz(path: Path, keys=("x", "y")) -> list[np.ndarray]:
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
    x, y = open_npz(path)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8:
        raise DatasetError(f"{path}: 'x' must be uint8 (0..255), got {x.dtype}; convert with "
                           f"np.clip(x * 255, 0, 255).round().astype(np.uint8) if it is 0..1 floats")
    if classes is None:
        cfile = path.parent / "classes.txt"
        classes = read_classes(cfile) if cfile.is_file() else numeric_classes(y, path)
    return ArrayData(torch.from_numpy(x), y, classes, source=str(path))
