"""Datasets: find, download or decode them once, cache as uint8 npz, and serve normalized batches from memory."""
from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BUILTIN = ("mnist", "cifar10", "svhn", "tiny-imagenet")
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class DatasetError(RuntimeError):
    """A dataset could not be found, downloaded or decoded; the message says what to do."""


@dataclass
class ArrayData:
    """One split in memory: x uint8 (N, H, W, C), y int64 (N,), and class names in label order."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.dtype != torch.uint8:
            raise DatasetError(f"x must be uint8 N x H x W x C, got {tuple(self.x.shape)} {self.x.dtype}")
        if len(self.x) != len(self.y):
            raise DatasetError(f"x has {len(self.x)} images but y has {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return self.x.shape[3], self.x.shape[1], self.x.shape[2]

    def mean_std(self) -> tuple[list[float], list[float]]:
        xf = self.x[:20000].float().div_(255)
        return xf.mean((0, 1, 2)).tolist(), xf.std((0, 1, 2)).tolist()

    def stratified(self, n: int, seed: int = 0) -> "ArrayData":
        """A class-balanced subset of about n items (the CIFAR-10 copy's test split is sorted by class)."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        k = max(1, n // len(self.classes))
        idx = [i[torch.randperm(len(i), generator=g)[:k]] for c in range(len(self.classes))
               if len(i := (self.y == c).nonzero().flatten())]
        idx = torch.cat(idx).sort().values
        return ArrayData(self.x[idx], self.y[idx], self.classes)


def save_npz(path: Path, data: ArrayData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x=data.x.numpy(), y=data.y.numpy())
    tmp.replace(path)
    (path.parent / "classes.txt").write_text("\n".join(data.classes) + "\n")


def load_npz(path: Path, classes: list[str] | None = None) -> ArrayData:
    try:
        with np.load(path) as z:
            x, y = z["x"], z["y"].astype(np.int64)
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"{path} is not a valid dataset npz (needs uint8 'x' N x H x W x C and 'y'): {e}") from e
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8:
        raise DatasetError(f"{path}: 'x' must be uint8, got {x.dtype}")
    if classes is None:
        cfile = path.parent / "classes.txt"
        classes = cfile.read_text().split("\n") if cfile.exists() else []
        classes = [c for c in classes if c] or [str(i) for i in range(int(y.max()) + 1)]
    return ArrayData(torch.from_numpy(x), torch.from_numpy(y), classes)


@contextlib.contextmanager
def _net_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _torchvision(name: str, raw: Path, train: bool, download: bool) -> ArrayData:
    from torchvision import datasets as tvd

    if name == "mnist":
        ds = tvd.MNIST(raw, train=train, download=download)
        return ArrayData(ds.data.unsqueeze(-1).contiguous(), ds.targets.long(), [str(i) for i in range(10)])
    if name == "cifar10":
        ds = tvd.CIFAR10(raw, train=train, download=download)
        return ArrayData(torch.from_numpy(ds.data), torch.tensor(ds.targets), list(ds.classes))
    ds = tvd.SVHN(raw, split="train" if train else "test", download=download)  # labels 0-9 (torchvision maps 10 -> 0)
    x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)))
    return ArrayData(x, torch.from_numpy(ds.labels.astype(np.int64)), [str(i) for i in range(10)])


def _decode_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB")
        a = np.asarray(im)
    return a[..., None] if a.ndim == 2 else a


def _stack(images: list[np.ndarray], labels: list[int], classes: list[str], where: Path) -> ArrayData:
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise DatasetError(f"images under {where} differ in size/channels {sorted(shapes)[:4]}; resize them to one size")
    return ArrayData(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), classes)


def _image_folder(split_dir: Path, classes: list[str] | None = None) -> ArrayData:
    """`<split>/<class>/*.png|jpg|...` -> ArrayData; classes sorted by name unless given."""
    classes = classes or sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    images, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((split_dir / c).rglob("*")):
            if f.suffix.lower() in IMAGE_EXTS:
                images.append(_decode_image(f))
                labels.append(i)
    if not images:
        raise DatasetError(f"no images found under {split_dir}/<class>/")
    return _stack(images, labels, classes, split_dir)


def _tiny_imagenet(raw: Path, train: bool, download: bool) -> ArrayData:
    """The official tiny-imagenet-200 layout: train/<wnid>/images/*.JPEG, val/images + val_annotations.txt."""
    base = raw / "tiny-imagenet-200"
    if not (base / "wnids.txt").exists():
        if not download:
            raise FileNotFoundError(base / "wnids.txt")
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_URL, str(raw))
    wnids = [w for w in (base / "wnids.txt").read_text().split() if w]
    words = {}
    if (base / "words.txt").exists():
        for line in (base / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    classes = [words.get(w, w) for w in wnids]
    index = {w: i for i, w in enumerate(wnids)}
    images, labels = [], []
    if train:
        for w in wnids:
            for f in sorted((base / "train" / w / "images").glob("*")):
                images.append(_decode_image(f))
                labels.append(index[w])
    else:
        for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                images.append(_decode_image(base / "val" / "images" / parts[0]))
                labels.append(index[parts[1]])
    if not images:
        raise DatasetError(f"no images found in {base}")
    return _stack(images, labels, classes, base)


def load_split(name: str, root: str | Path = "data", train: bool = True, download: bool = True) -> ArrayData:
    """Load one split of `name` from `root`, preferring the npz cache `<root>/<name>/{train,test}.npz`.

    Otherwise decodes (and caches) an image folder `<root>/<name>/{train,test}/<class>/*`, or a built-in
    dataset's official files under `<root>/<name>/raw`, downloading them with torchvision when allowed.
    """
    root = Path(root).expanduser()
    d = root / name
    split = "train" if train else "test"
    cache = d / f"{split}.npz"
    if cache.exists():
        return load_npz(cache)
    if (d / split).is_dir():
        data = _image_folder(d / split)
    elif name in BUILTIN:
        raw = d / "raw"
        try:
            with _net_timeout(15):
                if name == "tiny-imagenet":
                    data = _tiny_imagenet(raw, train, download)
                else:
                    data = _torchvision(name, raw, train, download)
        except DatasetError:
            raise
        except Exception as e:  # missing files, no network, corrupt archive: one clear message
            raise DatasetError(
                f"dataset {name!r} ({split}) is not available: looked for {cache}, {d / split}/<class>/ and the "
                f"official files under {raw}, and {'the download failed' if download else 'downloading is off'} "
                f"({type(e).__name__}: {str(e)[:200]}). Supply it by placing {split}.npz (uint8 x: N x H x W x C, "
                f"y: labels) and classes.txt in {d}, or the official files in {raw}, or pass --data-root "
                f"pointing at a folder that holds {name}/."
            ) from e
    else:
        raise DatasetError(
            f"dataset {name!r} not found: looked for {cache} and {d / split}/<class>/*. A user dataset is either "
            f"{d}/train.npz + test.npz (uint8 x: N x H x W x C, y: labels) or image folders "
            f"{d}/train/<class>/ and {d}/test/<class>/; built-ins are {', '.join(BUILTIN)}."
        )
    try:
        save_npz(cache, data)
    except OSError:
        pass  # a read-only root (such as ../shared/datasets) still works, just without the cache
    return data


def load_dataset(name: str, root: str | Path = "data", download: bool = True) -> tuple[ArrayData, ArrayData]:
    train = load_split(name, root, True, download)
    test = load_split(name, root, False, download)
    if train.shape != test.shape:
        raise DatasetError(f"{name}: train images are {train.shape} but test images are {test.shape}")
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

    def prep(self, xb: torch.Tensor) -> torch.Tensor:
        # NHWC uint8 -> permuted view is NCHW with channels_last strides; float() keeps that layout.
        return (xb.permute(0, 3, 1, 2).float() - self.mean) / self.std

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random 4-pixel-padded crop per batch-quarter, and horizontal flips for 3-channel images."""
        n, c, h, w = x.shape
        xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
        out = torch.empty_like(x)
        for q in torch.arange(n).chunk(4):
            dy, dx = torch.randint(0, 9, (2,), generator=self.gen).tolist()
            out[q] = xp[q, :, dy:dy + h, dx:dx + w]
        if c == 3:
            flip = (torch.rand(n, generator=self.gen) < 0.5).to(x.device)
            out[flip] = out[flip].flip(3)
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
