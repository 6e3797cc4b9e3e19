"""Dataset loading from each real on-disk format, the npz cache, batching, and the missing-dataset error."""
import pickle
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mscompare.data import Batches, DatasetError, load_dataset, load_split

RNG = np.random.default_rng(0)


def write_idx(path, arr):
    codes = {1: 0x0801, 3: 0x0803}
    with open(path, "wb") as f:
        f.write(struct.pack(">I", codes[arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape))
        f.write(arr.astype(np.uint8).tobytes())


def test_mnist_idx_files(tmp_path):
    raw = tmp_path / "mnist" / "raw" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = {"train": RNG.integers(0, 256, (30, 28, 28)), "t10k": RNG.integers(0, 256, (10, 28, 28))}
    labels = {"train": RNG.integers(0, 10, 30), "t10k": RNG.integers(0, 10, 10)}
    for s in ("train", "t10k"):
        write_idx(raw / f"{s}-images-idx3-ubyte", imgs[s])
        write_idx(raw / f"{s}-labels-idx1-ubyte", labels[s])
    train, test = load_dataset("mnist", tmp_path, download=False)
    assert train.x.shape == (30, 28, 28, 1) and test.x.shape == (10, 28, 28, 1)
    assert np.array_equal(train.x[..., 0].numpy(), imgs["train"]) and np.array_equal(test.y.numpy(), labels["t10k"])
    assert (tmp_path / "mnist" / "train.npz").exists()  # cached in the shared format
    again = load_split("mnist", tmp_path, train=True, download=False)
    assert torch.equal(again.x, train.x) and again.classes == [str(i) for i in range(10)]


def test_cifar10_pickle_batches(tmp_path, monkeypatch):
    import torchvision

    # our files are real pickle batches but not the official bytes, so skip torchvision's md5 checks
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    base = tmp_path / "cifar10" / "raw" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    expect = {}
    for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = RNG.integers(0, 256, (4, 3072), dtype=np.uint8)
        y = RNG.integers(0, 10, 4).tolist()
        expect[b] = (x, y)
        with open(base / b, "wb") as f:
            pickle.dump({"data": x, "labels": y}, f)
    train, test = load_dataset("cifar10", tmp_path, download=False)
    assert train.x.shape == (20, 32, 32, 3) and test.x.shape == (4, 32, 32, 3)
    assert train.classes == names
    x, y = expect["test_batch"]
    assert np.array_equal(test.x.numpy(), x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert test.y.tolist() == y


def test_svhn_mat_files(tmp_path, monkeypatch):
    import scipy.io
    import torchvision

    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    raw = tmp_path / "svhn" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 12), ("test", 6)):
        X = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.arange(1, n + 1).reshape(-1, 1) % 10 + 1  # SVHN labels are 1..10, where 10 means digit 0
        scipy.io.savemat(raw / f"{split}_32x32.mat", {"X": X, "y": y})
        if split == "test":
            Xt, yt = X, y
    train, test = load_dataset("svhn", tmp_path, download=False)
    assert train.x.shape == (12, 32, 32, 3)
    assert np.array_equal(test.x.numpy(), Xt.transpose(3, 0, 1, 2))
    assert test.y.tolist() == [int(v) % 10 for v in yt.ravel()]


def test_tiny_imagenet_layout(tmp_path):
    base = tmp_path / "tiny-imagenet" / "raw" / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    ann = []
    for i, w in enumerate(wnids):
        (base / "train" / w / "images").mkdir(parents=True)
        for j in range(3):
            Image.new("RGB", (64, 64), (i * 200, j * 50, 0)).save(base / "train" / w / "images" / f"{w}_{j}.JPEG")
        Image.new("RGB", (64, 64), (i * 200, 0, 0)).save(base / "val" / "images" / f"val_{i}.JPEG")
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    train, test = load_dataset("tiny-imagenet", tmp_path, download=False)
    assert train.x.shape == (6, 64, 64, 3) and train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert test.y.tolist() == [0, 1] and train.classes == ["goldfish", "European fire salamander"]
    assert abs(int(test.x[1, 10, 10, 0]) - 200) < 8  # JPEG round trip of the red channel


def test_image_folder(tmp_path):
    for split in ("train", "test"):
        for c, val in (("cat", 30), ("dog", 220)):
            d = tmp_path / "pets" / split / c
            d.mkdir(parents=True)
            for j in range(2):
                Image.new("L", (16, 16), val).save(d / f"{j}.png")
    train, test = load_dataset("pets", tmp_path)
    assert train.classes == ["cat", "dog"] and train.x.shape == (4, 16, 16, 1)
    assert train.x[train.y == 1].float().mean() == 220


def test_npz_folder_and_bad_npz(tiny_npz, tmp_path):
    train, test = load_dataset("tinydigits", tiny_npz)
    assert train.classes == ["tl", "tr", "bl", "br"] and len(test) == 200
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "train.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a valid dataset npz"):
        load_split("broken", tmp_path)


def test_missing_builtin_fails_fast_and_names_paths(tmp_path, monkeypatch):
    import urllib.request

    def offline(*a, **k):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    t = time.time()
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", tmp_path, download=True)
    assert time.time() - t < 10
    msg = str(e.value)
    assert "cifar10" in msg and str(tmp_path / "cifar10" / "train.npz") in msg and "--data-root" in msg


def test_unknown_user_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="train.npz"):
        load_dataset("mystuff", tmp_path)


def test_batches_normalize_and_keep_channels_last(tiny_npz):
    train, _ = load_dataset("tinydigits", tiny_npz)
    mean, std = train.mean_std()
    b = Batches(train, mean, std, torch.device("cpu"), augment=True)
    x, y = next(b.train_batches(64))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (64,)
    assert x.is_contiguous(memory_format=torch.channels_last)
    xe, _ = next(b.eval_batches(len(train)))
    assert abs(xe.mean().item()) < 0.05 and abs(xe.std().item() - 1) < 0.05


def test_stratified_subset_is_balanced(tiny_npz):
    _, test = load_dataset("tinydigits", tiny_npz)
    sub = test.stratified(40)
    assert len(sub) == 40 and torch.bincount(sub.y).tolist() == [10, 10, 10, 10]
