"""Messy real-format datasets made in tmp_path: each defect gives a specific DatasetError or a documented conversion."""
import io
import os
import struct
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, mscompare_cli
from mscompare import arrays, data as data_mod
from mscompare.data import ArrayData, DatasetError, DatasetWarning, load_dataset, load_split


@pytest.fixture(autouse=True)
def bounded_time():
    t = time.time()
    yield
    assert time.time() - t < 30, "a defect test must finish in seconds"


def save(path, mode="L", size=(8, 8), value=100):
    """One image file; the format comes from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value, np.uint16)).save(path)
    elif mode == "P":
        im = Image.new("P", size, 1)
        im.putpalette([0, 0, 0, value, 20, 200] + [0] * 762)
        im.save(path)
    else:
        Image.new(mode, size, value).save(path)
    return path


def folders(root, name="pets", spec=None, size=(8, 8)):
    """<root>/<name>/<split>/<class>/<i>.png with a different grey value per class."""
    spec = spec or {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}}
    for split, classes in spec.items():
        for k, (c, n) in enumerate(classes.items()):
            for i in range(n):
                save(root / name / split / c / f"{i}.png", "L", size, 40 + 80 * k)
    return root / name


def tiny_layout(base, wnids=("n01443537", "n01629819", "n01641577"), n_train=3, n_val=2, gray=(0,)):
    """The official tiny-imagenet-200 layout, small: class i's images in `gray` are grayscale JPEGs."""
    wnids = list(wnids)
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # not sorted, like the official file
    (base / "words.txt").write_text("".join(f"{w}\tthing {w[-3:]}, other name\n" for w in wnids) + "n0\tunused\n")
    ann = []
    for i, w in enumerate(wnids):
        mode = "L" if i in gray else "RGB"
        value = 60 + 60 * i if mode == "L" else (60 + 60 * i, 10, 200)
        boxes = []
        for j in range(n_train):
            save(base / "train" / w / "images" / f"{w}_{j}.JPEG", mode, (64, 64), value)
            boxes.append(f"{w}_{j}.JPEG\t0\t0\t63\t63")
        (base / "train" / w / f"{w}_boxes.txt").write_text("\n".join(boxes) + "\n")
        for j in range(n_val):
            f = f"val_{i * n_val + j}.JPEG"
            save(base / "val" / "images" / f, mode, (64, 64), value)
            ann.append(f"{f}\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    for j in range(4):  # unlabelled, as in the official release: never a class, never read
        save(base / "test" / "images" / f"test_{j}.JPEG", "RGB", (64, 64), (1, 2, 3))
    return wnids


def npz(root, name="arr", y=(0, 1, 0, 1), x=None, classes="a\nb\n", test_y=None):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y)
    x = np.zeros((len(y), 4, 4, 1), np.uint8) if x is None else x
    np.savez_compressed(d / "train.npz", x=x, y=y)
    ty = y if test_y is None else np.asarray(test_y)
    np.savez_compressed(d / "test.npz", x=np.zeros((len(ty), 4, 4, 1), np.uint8), y=ty)
    if classes is not None:
        (d / "classes.txt").write_text(classes)
    return d


# --- one class list, hidden entries ------------------------------------------------------------------------------

def test_train_defines_classes_test_may_lack_some_and_hidden_entries_are_ignored(tmp_path):
    d = folders(tmp_path, spec={"train": {"cat": 2, "dog": 2, "emu": 1}, "test": {"dog": 2}})
    for split in ("train", "test"):
        save(d / split / ".ipynb_checkpoints" / "0-checkpoint.png")
        save(d / split / "dog" / ".hidden.png")
        (d / split / "dog" / ".DS_Store").write_bytes(b"\0junk")
        (d / split / ".DS_Store").write_bytes(b"\0junk")
    test = load_split("pets", tmp_path, train=False)  # test first: it must not write classes.txt
    assert test.classes == ["cat", "dog", "emu"] and test.y.tolist() == [1, 1]
    assert not (d / "classes.txt").exists()
    train, test = load_dataset("pets", tmp_path)
    assert train.classes == test.classes == ["cat", "dog", "emu"] and train.y.tolist() == [0, 0, 1, 1, 2]
    assert (d / "classes.txt").read_text().split() == ["cat", "dog", "emu"]


def test_test_class_that_train_lacks_is_named(tmp_path):
    folders(tmp_path, spec={"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "wolf": 1}})
    with pytest.raises(DatasetError, match="'wolf'.*not among the 2 train classes"):
        load_dataset("pets", tmp_path)


def test_npz_test_split_uses_trains_class_list(tmp_path):
    npz(tmp_path, y=[0, 1, 2, 1], classes=None, test_y=[0, 0])  # no classes.txt: "0".."2" from train's labels
    train, test = load_dataset("arr", tmp_path)
    assert train.classes == test.classes == ["0", "1", "2"]
    assert load_split("arr", tmp_path, train=False).classes == ["0", "1", "2"]
    npz(tmp_path, name="arr2", y=[0, 1], classes=None, test_y=[0, 2])
    with pytest.raises(DatasetError, match="outside 0..1"):
        load_dataset("arr2", tmp_path)


def test_symlinked_class_folders_are_followed_and_link_loops_end(tmp_path):
    elsewhere = folders(tmp_path / "elsewhere", spec={"train": {"cat": 2, "dog": 1}})
    d = tmp_path / "root" / "pets" / "train"
    d.mkdir(parents=True)
    (d / "cat").symlink_to(elsewhere / "train" / "cat", target_is_directory=True)
    (d / "dog").symlink_to(elsewhere / "train" / "dog", target_is_directory=True)
    (d / "dog" / "loop").symlink_to(d, target_is_directory=True)  # would walk dog/loop/dog/loop/... forever
    train = load_split("pets", tmp_path / "root")
    assert train.classes == ["cat", "dog"] and train.y.tolist() == [0, 0, 1]
    save(elsewhere / "train" / "dog" / "new.png")  # a change behind the link rebuilds the cache
    assert load_split("pets", tmp_path / "root").y.tolist() == [0, 0, 1, 1]


# --- image modes and bad files ---------------------------------------------------------------------------------

def test_mixed_modes_become_rgb_and_16_bit_is_scaled_not_clipped(tmp_path):
    c = tmp_path / "modes" / "train" / "a"
    save(c / "l.png", "L", value=90)
    save(c / "rgb.bmp", "RGB", value=(10, 20, 30))
    save(c / "rgba.png", "RGBA", value=(40, 50, 60, 0))
    save(c / "p.png", "P", value=70)
    save(c / "i16.png", "I;16", value=128 * 257)
    save(c / "one.png", "1", value=1)
    save(c / "cmyk.jpg", "CMYK", value=(0, 0, 0, 0))
    save(c / "gif.gif", "L", value=5)
    save(tmp_path / "modes" / "train" / "b" / "x.png")
    x = load_split("modes", tmp_path).x
    assert x.shape == (9, 8, 8, 3)
    px = {n: x[i, 0, 0].tolist() for i, n in enumerate(["cmyk", "gif", "i16", "l", "one", "p", "rgb", "rgba"])}
    assert px["l"] == [90] * 3 and px["i16"] == [128] * 3 and px["one"] == [255] * 3 and px["gif"] == [5] * 3
    assert px["rgb"] == [10, 20, 30] and px["p"] == [70, 20, 200]
    assert px["rgba"] == [255, 255, 255]  # fully transparent: composited onto white, as uploads are
    assert all(abs(v - 255) < 3 for v in px["cmyk"])  # CMYK (0,0,0,0) is white


def test_grey_only_stays_one_channel_and_a_colour_test_split_makes_both_rgb(tmp_path):
    d = folders(tmp_path)
    save(d / "train" / "cat" / "deep.png", "I;16", value=65535)
    assert load_split("pets", tmp_path).x.shape == (5, 8, 8, 1)
    save(d / "test" / "dog" / "colour.png", "RGB", value=(200, 0, 0))
    train, test = load_dataset("pets", tmp_path)
    assert train.shape == test.shape == (3, 8, 8)
    assert train.x[train.y == 0].amax().item() == 255 and torch.equal(train.x[..., 0], train.x[..., 2])


@pytest.mark.parametrize("bad,content", [
    ("cat/truncated.png", "truncated"), ("cat/fake.jpg", b"this is text"), ("dog/notes.txt", b"a note"),
    ("loose.png", "png"), ("cat/float.tif", "float")])
def test_bad_file_is_named_and_skip_bad_skips_and_reports_it(tmp_path, bad, content):
    d = folders(tmp_path)
    f = d / "train" / bad
    if content == "truncated":
        save(f, "RGB", (32, 32), (1, 2, 3))
        f.write_bytes(f.read_bytes()[:60])
    elif content == "png":
        save(f)
    elif content == "float":
        Image.fromarray(np.ones((8, 8), np.float32)).save(f)
    else:
        f.write_bytes(content)
    with pytest.raises(DatasetError) as e:
        load_dataset("pets", tmp_path)
    assert str(f) in str(e.value) and "skip_bad=True" in str(e.value)
    assert not (d / "train.npz").exists()  # a failed decode leaves no cache
    with pytest.warns(DatasetWarning, match="skipped 1 bad file"):
        train, _ = load_dataset("pets", tmp_path, skip_bad=True)
    assert len(train) == 4 and len(train.skipped) == 1 and train.skipped[0].startswith(bad)
    with pytest.warns(DatasetWarning):  # the cache remembers what was skipped
        assert load_split("pets", tmp_path, skip_bad=True).skipped == train.skipped


# --- sizes -----------------------------------------------------------------------------------------------------

def test_mixed_sizes_list_each_size_and_size_option_resizes(tmp_path):
    d = folders(tmp_path, size=(16, 16))
    save(d / "train" / "dog" / "small.png", "L", (8, 8))
    save(d / "train" / "dog" / "wide.jpg", "RGB", (12, 8))
    with pytest.raises(DatasetError) as e:
        load_dataset("pets", tmp_path)
    msg = str(e.value)
    for part in ("16x16 (height x width): 4 files", "8x8 (height x width): 1 files, e.g. dog/small.png",
                 "8x12 (height x width): 1 files, e.g. dog/wide.jpg", "size=S"):
        assert part in msg
    train, test = load_dataset("pets", tmp_path, size=10)
    assert train.x.shape == (6, 10, 10, 3) and test.x.shape == (2, 10, 10, 3)


def test_non_square_images_error_names_the_size(tmp_path):
    folders(tmp_path, size=(12, 8))
    with pytest.raises(DatasetError, match=r"8x12 \(height x width\): 4 files.*size=S"):
        load_dataset("pets", tmp_path)
    npz(tmp_path, x=np.zeros((4, 4, 6, 1), np.uint8))
    with pytest.raises(DatasetError, match="4x6 .*square"):
        load_split("arr", tmp_path)


def test_grayscale_and_rgb_jpegs_of_one_size_load_without_a_resize_error(tmp_path):
    d = folders(tmp_path)
    save(d / "train" / "cat" / "c.jpg", "RGB", value=(9, 9, 9))
    train, test = load_dataset("pets", tmp_path)
    assert train.shape == test.shape == (3, 8, 8)


# --- labels ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("y,expect", [
    (np.array([[0], [1], [1], [0]]), [0, 1, 1, 0]),
    (np.array([[1, 0], [0, 1], [0, 1], [1, 0]]), [0, 1, 1, 0]),
    (np.array([0.0, 1.0, 1.0, 0.0]), [0, 1, 1, 0]),
    (np.array([0, 1, 1, 0], np.uint8), [0, 1, 1, 0]),
])
def test_accepted_label_forms_are_converted(tmp_path, y, expect):
    npz(tmp_path, y=y)
    train, _ = load_dataset("arr", tmp_path)
    assert train.y.dtype == torch.int64 and train.y.tolist() == expect


@pytest.mark.parametrize("y,match", [
    (np.array([0, 1.5, 1, 0]), "1.5 .*not a whole number"),
    (np.array([0, 1, 2, 0]), r"1 label\(s\) outside 0..1, e.g. 2 at index 2; there are 2 classes.*classes.txt"),
    (np.array([0, -1, 1, 0]), "outside 0..1, e.g. -1"),
    (np.array([[1, 1], [0, 1], [0, 1], [1, 0]]), "one-hot rows .* row 0"),
    (np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]]), "3 columns but there are 2 classes"),
    (np.zeros((4, 2, 2), np.int64), "1-D class indices"),
    (np.array(["a", "b", "a", "b"]), "integer class indices, got dtype <U1"),
    (np.array([0, np.nan, 1, 0]), "nan.*not a whole number"),
    (np.array([0, 1, 0]), "x has 4 images but y has 3 labels"),
])
def test_bad_labels_are_rejected_on_load(tmp_path, y, match):
    x = np.zeros((4, 4, 4, 1), np.uint8)
    npz(tmp_path, y=y, x=x)
    with pytest.raises(DatasetError, match=match):
        load_split("arr", tmp_path)


def test_arraydata_checks_labels_and_layout_on_every_path():
    x = torch.zeros(3, 8, 8, 1, dtype=torch.uint8)
    assert ArrayData(x, torch.tensor([[0], [1], [1]]), ["a", "b"]).y.tolist() == [0, 1, 1]
    with pytest.raises(DatasetError, match="outside 0..1"):
        ArrayData(x, torch.tensor([0, 1, 5]), ["a", "b"])
    with pytest.raises(DatasetError, match="channels-first"):
        ArrayData(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 1]), ["a", "b"])
    with pytest.raises(DatasetError, match="uint8"):
        ArrayData(x.float(), torch.tensor([0, 1, 1]), ["a", "b"])


# --- the cache knows its source ----------------------------------------------------------------------------------

def test_cache_rebuilds_when_the_source_changes(tmp_path):
    d = folders(tmp_path)
    assert len(load_split("pets", tmp_path)) == 4
    assert (d / "train.source.json").exists()
    stamp = (d / "train.npz").stat().st_mtime_ns
    (d / "train" / "cat" / ".DS_Store").write_bytes(b"x")  # hidden: no rebuild
    assert len(load_split("pets", tmp_path)) == 4 and (d / "train.npz").stat().st_mtime_ns == stamp
    save(d / "train" / "cat" / "new.png")  # added
    assert len(load_split("pets", tmp_path)) == 5
    f = d / "train" / "dog" / "0.png"  # modified (same size on disk, so change the mtime explicitly)
    save(f, value=7)
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert 7 in load_split("pets", tmp_path).x.flatten().tolist()
    f.unlink()  # removed
    assert len(load_split("pets", tmp_path)) == 4
    assert load_split("pets", tmp_path, size=4).shape == (1, 4, 4)  # another option: rebuilt too
    (d / "train" / "zebra").mkdir()
    save(d / "train" / "zebra" / "z.png")
    assert load_split("pets", tmp_path, train=False).classes == ["cat", "dog", "zebra"]  # new class list: rebuilt


def test_partial_or_unvouched_cache_is_never_used(tmp_path, monkeypatch):
    d = folders(tmp_path)

    def disk_full(f, **kw):
        f.write(b"PK partial")
        raise OSError("no space left on device (test)")

    with monkeypatch.context() as m:
        m.setattr(data_mod.np, "savez_compressed", disk_full)
        assert len(load_split("pets", tmp_path)) == 4  # still works, just without a cache
    assert sorted(p.name for p in d.iterdir()) == ["test", "train"]  # no partial npz, no temp file
    np.savez_compressed(d / "train.npz", x=np.zeros((1, 8, 8, 1), np.uint8), y=np.zeros(1))  # no sidecar
    assert len(load_split("pets", tmp_path)) == 4
    (d / "train.npz").write_bytes(b"garbage")  # sidecar matches, npz broken: rebuilt from the source
    assert len(load_split("pets", tmp_path)) == 4


@pytest.mark.parametrize("damage", ["truncated", "cut_tail", "empty", "deflate", "sidecar_list", "sidecar_no_classes",
                                    "sidecar_garbage"])
def test_corrupt_cache_of_an_image_folder_is_rebuilt(tmp_path, damage):
    d = folders(tmp_path)
    cache, side = d / "train.npz", d / "train.source.json"
    first = load_split("pets", tmp_path)
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:len(cache.read_bytes()) // 2])
    elif damage == "cut_tail":
        cache.write_bytes(cache.read_bytes()[:-10])
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "deflate":
        break_deflate(cache)
    elif damage == "sidecar_list":
        side.write_text("[1, 2]")
    elif damage == "sidecar_no_classes":
        side.write_text(side.read_text().replace('"classes"', '"klasses"'))
    else:
        side.write_text('{"fingerprint": ')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_split("pets", tmp_path)
    assert torch.equal(again.x, first.x) and torch.equal(again.y, first.y) and again.classes == first.classes
    assert torch.equal(data_mod.load_npz(cache, first.classes).x, first.x)  # the rebuilt cache is valid
    stamp = (cache.stat().st_ino, cache.stat().st_mtime_ns)
    assert torch.equal(load_split("pets", tmp_path).x, first.x)
    assert (cache.stat().st_ino, cache.stat().st_mtime_ns) == stamp  # ... and used as is from now on


def test_npz_without_a_source_is_used_as_is(tiny_npz):
    train, _ = load_dataset("tinydigits", tiny_npz)
    assert len(train) == 600 and not (tiny_npz / "tinydigits" / "train.source.json").exists()


# --- Tiny ImageNet ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["tiny-imagenet/tiny-imagenet-200", "tiny-imagenet/raw/tiny-imagenet-200",
                                   "tiny-imagenet-200"])
def test_tiny_imagenet_real_layout_with_grayscale_jpegs(tmp_path, where):
    base = tmp_path / where
    wnids = tiny_layout(base)
    save(base / "train" / ".ipynb_checkpoints" / "x.JPEG", "RGB", (64, 64))
    train, test = load_dataset("tiny-imagenet", tmp_path, download=False)
    assert train.x.shape == (9, 64, 64, 3) and test.x.shape == (6, 64, 64, 3)  # test/ (4 images) never read
    assert train.classes == [f"thing {w[-3:]}" for w in sorted(wnids)] and len(test.classes) == 3
    assert train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and test.y.tolist() == [0, 0, 1, 1, 2, 2]
    grey = train.x[train.y == 0].int()
    assert (grey[..., 0] == grey[..., 1]).all() and abs(grey.float().mean().item() - 60) < 3
    assert (tmp_path / "tiny-imagenet" / "train.npz").exists()


@pytest.mark.parametrize("defect,match", [
    ("short_wnids", "lists 2 wnids for 3 train folders; train folders not in wnids.txt: n01641577"),
    ("extra_wnid", "wnids with no train folder: n09999999"),
    ("val_unknown_wnid", "line 2: wnid 'n09999999' is not in"),
    ("val_missing_file", "val_1.JPEG is listed in .*val_annotations.txt line 2 but missing"),
    ("val_unlabelled", "val_extra.JPEG has no label in"),
    ("no_wnids", "wnids.txt is missing"),
])
def test_tiny_imagenet_defects_are_named(tmp_path, defect, match):
    base = tmp_path / "tiny-imagenet" / "tiny-imagenet-200"
    wnids = tiny_layout(base, n_val=1)
    ann = base / "val" / "val_annotations.txt"
    if defect == "short_wnids":
        (base / "wnids.txt").write_text("\n".join(wnids[:2]) + "\n")
    elif defect == "extra_wnid":
        (base / "wnids.txt").write_text("\n".join(wnids + ["n09999999"]) + "\n")
    elif defect == "val_unknown_wnid":
        ann.write_text(ann.read_text().replace(f"\t{wnids[1]}\t", "\tn09999999\t"))
    elif defect == "val_missing_file":
        (base / "val" / "images" / "val_1.JPEG").unlink()
    elif defect == "val_unlabelled":
        save(base / "val" / "images" / "val_extra.JPEG", "RGB", (64, 64))
    else:
        (base / "wnids.txt").unlink()
    with pytest.raises(DatasetError, match=match):
        load_dataset("tiny-imagenet", tmp_path, download=False)


def test_tiny_imagenet_not_found_names_every_place_searched(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("tiny-imagenet", tmp_path, download=False)
    for p in ("tiny-imagenet/tiny-imagenet-200", "tiny-imagenet/raw/tiny-imagenet-200", "tiny-imagenet-200/wnids"):
        assert str(tmp_path / p) in str(e.value)


# --- normalization, names, roots, degenerate splits -----------------------------------------------------------

def test_mean_std_covers_all_classes_of_class_sorted_data():
    x = torch.cat([torch.zeros(20000, 2, 2, 1), torch.full((20000, 2, 2, 1), 255.)]).to(torch.uint8)
    y = torch.cat([torch.zeros(20000), torch.ones(20000)]).long()
    mean, std = ArrayData(x, y, ["dark", "bright"]).mean_std()
    assert abs(mean[0] - 0.5) < 1e-9 and abs(std[0] - 0.5) < 1e-4
    r = torch.randint(0, 256, (50, 5, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = ArrayData(r, torch.zeros(50), ["a"]).mean_std()
    xf = r.double() / 255
    assert np.allclose(mean, xf.mean((0, 1, 2)).tolist()) and np.allclose(std, xf.std((0, 1, 2)).tolist())


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/b", "a\\b", "", ".", "..", ".hidden", "x y"])
def test_dataset_names_must_be_plain(tmp_path, name):
    with pytest.raises(DatasetError, match="dataset name .* letters, digits"):
        load_dataset(name, tmp_path)


def test_missing_data_root_is_named_and_not_created(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", root)
    assert str(root) in str(e.value) and "--data-root" in str(e.value) and not root.exists()


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    from mscompare import datasets

    def offline(*a, **k):  # what torchvision raises without a network: the reason spread over lines
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n<urlopen error>\n")

    monkeypatch.setattr(datasets.get("mnist").loader, "load", offline)
    (tmp_path / "mnist").mkdir()
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", tmp_path)
    assert "\n" not in str(e.value) and "Tried https://a/, got: <urlopen error>" in str(e.value)


def test_empty_split_and_single_class_are_errors(tmp_path):
    d = tmp_path / "empty" / "train"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir()
    with pytest.raises(DatasetError, match="no usable images under"):
        load_split("empty", tmp_path)
    folders(tmp_path, name="half", spec={"train": {"cat": 2}})
    (tmp_path / "half" / "train" / "dog").mkdir()
    with pytest.raises(DatasetError, match="'dog' hold no usable images"):
        load_split("half", tmp_path)
    folders(tmp_path, name="one", spec={"train": {"cat": 2}})
    with pytest.raises(DatasetError, match="1 class.*at least 2"):
        load_split("one", tmp_path)
    npz(tmp_path, name="none", y=np.zeros(0, np.int64))
    with pytest.raises(DatasetError, match="has 0 images"):
        load_split("none", tmp_path)


def test_no_warning_without_skipped_files(tmp_path):
    folders(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("pets", tmp_path)


# --- damaged, crafted and unsupported npz files --------------------------------------------------------------------

def break_deflate(path, member="x.npy"):
    """Make `member`'s deflate stream invalid: its first byte becomes a block of the reserved type 3."""
    with zipfile.ZipFile(path) as z:
        at = z.getinfo(member).header_offset
    b = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", b[at + 26:at + 30])
    b[at + 30 + name_len + extra_len] = 0xFF
    path.write_bytes(bytes(b))


def test_npz_with_a_corrupt_compressed_stream_is_named(tmp_path):
    d = npz(tmp_path, x=np.arange(4 * 16).reshape(4, 4, 4, 1).astype(np.uint8))
    break_deflate(d / "train.npz")
    with pytest.raises(DatasetError, match=f"{d / 'train.npz'} is not a valid dataset npz.*decompressing"):
        load_split("arr", tmp_path)


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], lambda b: b[:-8], lambda b: b"",
                                    lambda b: b"PK\x03\x04" + b"\0" * 40])
def test_truncated_or_garbled_npz_is_named(tmp_path, damage):
    d = npz(tmp_path)
    f = d / "train.npz"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DatasetError, match="is not a valid dataset npz") as e:
        load_split("arr", tmp_path)
    assert str(f) in str(e.value)


def npy_member(shape, dtype="|u1", data=b"\0" * 64) -> bytes:
    """A .npy file whose header claims `shape` but that stores only `data`."""
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": dtype, "fortran_order": False, "shape": shape})
    return b.getvalue() + data


def test_npz_header_claiming_a_trillion_images_is_named_without_allocating(tmp_path):
    d = tmp_path / "huge"
    d.mkdir()
    y = io.BytesIO()
    np.lib.format.write_array(y, np.zeros(4, np.int64))
    with zipfile.ZipFile(d / "train.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy_member((10 ** 12, 28, 28, 1)))
        z.writestr("y.npy", y.getvalue())
    with pytest.raises(DatasetError) as e:
        load_split("huge", tmp_path)
    msg = str(e.value)
    assert str(d / "train.npz") in msg and "(1000000000000, 28, 28, 1)" in msg and "stores only 64 bytes" in msg


def test_npz_larger_than_memory_is_named(tmp_path, monkeypatch):
    d = npz(tmp_path)
    monkeypatch.setattr(arrays, "_memory", lambda: 32)
    with pytest.raises(DatasetError, match=rf"{d / 'train.npz'}: 'x' claims shape \(4, 4, 4, 1\) uint8 .*"
                                           rf"more than this machine's 32 bytes of memory"):
        load_split("arr", tmp_path)


def test_npz_member_that_is_not_an_array_is_named(tmp_path):
    d = npz(tmp_path)
    with zipfile.ZipFile(d / "train.npz", "w") as z:
        z.writestr("x", b"not an array")
        z.writestr("y.npy", npy_member((0,), "<i8", b""))
    with pytest.raises(DatasetError, match=f"{d / 'train.npz'} is not a valid dataset npz.*magic"):
        load_split("arr", tmp_path)


@pytest.mark.parametrize("channels", [2, 4])
def test_npz_with_other_than_1_or_3_channels_is_named(tmp_path, channels):
    d = npz(tmp_path, x=np.zeros((4, 8, 8, channels), np.uint8))
    with pytest.raises(DatasetError, match=f"{d / 'train.npz'}: x \\(4, 8, 8, {channels}\\) has {channels} channels; "
                                           f"1 \\(grey\\) or 3 \\(RGB\\) channels are supported"):
        load_split("arr", tmp_path)


def cli(*args, timeout=None):
    return mscompare_cli(*args, cwd=ROOT)


def test_rgba_npz_exits_1_from_the_cli_naming_the_file(tmp_path):
    d = npz(tmp_path, x=np.zeros((4, 8, 8, 4), np.uint8))
    r = cli("train", "--model", "mobilenet", "--dataset", "arr", "--data-root", tmp_path, "--runs-dir",
            tmp_path / "runs", "--iters", 1)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert str(d / "train.npz") in r.stderr and "1 (grey) or 3 (RGB) channels are supported" in r.stderr


# --- the run store ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,what", [("folder", "is a folder"), ("fifo", "is not a regular file")])
def test_run_store_path_that_is_not_a_file_is_named(tmp_path, kind, what):
    from mscompare.runs import RunStore, StoreError

    store = tmp_path / "runs" / "runs.sqlite"
    store.parent.mkdir()
    store.mkdir() if kind == "folder" else os.mkfifo(store)
    with pytest.raises(StoreError, match=f"{store} {what}, not a SQLite file.*mv {store} {store}.old"):
        RunStore(tmp_path / "runs")


def test_run_store_folder_exits_1_from_the_cli_in_one_line(tmp_path):
    (tmp_path / "runs.sqlite").mkdir()
    r = cli("runs", "--runs-dir", tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert f"{tmp_path / 'runs.sqlite'} is a folder, not a SQLite file" in r.stderr


# --- a Ray cluster that isn't there --------------------------------------------------------------------------------

def test_unreachable_ray_address_fails_in_one_line_within_seconds(tmp_path):
    pytest.importorskip("ray")
    from conftest import digits_npz

    digits_npz(tmp_path / "data", name="mnist", n_train=16, n_test=8)
    t = time.monotonic()
    r = cli("sweep", "--models", "mobilenet", "--datasets", "mnist", "--widths", 8, "--iters", 2, "--data-root",
            tmp_path / "data", "--runs-dir", tmp_path / "runs", "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "no Ray cluster answers at 127.0.0.1:1 (Connection refused)" in r.stderr and time.monotonic() - t < 25


@pytest.mark.parametrize("joins", [False, True])
def test_joining_ray_tries_once_and_holds_back_rays_log_lines_only_on_failure(monkeypatch, capfd, joins):
    ray = pytest.importorskip("ray")
    from mscompare import ray_exec

    ray_line = b"[2026-11-30 19:04:52,286 W 4214 4214] rpc_client.h:153: Failed to connect to GCS at 10.0.0.1:6379\n"
    seen = {}

    def init(**kw):  # what Ray does when something other than a Ray head answers
        seen["wait"] = os.environ.get(ray_exec.GCS_WAIT)
        os.write(2, ray_line + b"other output\n")
        if joins:
            return
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                               "  ...\nray.exceptions.RpcError: Timed out while waiting for GCS to become available.")
        except RuntimeError as e:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from e

    monkeypatch.setattr(ray_exec, "_reach", lambda address: None)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.delenv(ray_exec.GCS_WAIT, raising=False)
    if joins:
        ray_exec._join_ray("10.0.0.1:6379", {})
    else:
        with pytest.raises(ValueError, match=r"^can't join a Ray cluster at 10.0.0.1:6379 \(.*\): "
                                             r"ray.exceptions.RpcError: Timed out while waiting for GCS"):
            ray_exec._join_ray("10.0.0.1:6379", {})
    assert seen["wait"] == "1" and ray_exec.GCS_WAIT not in os.environ
    assert capfd.readouterr().err == (ray_line.decode() if joins else "") + "other output\n"


def test_runs_export_into_a_folder_is_one_line(tmp_path):
    p = mscompare_cli("runs", "export", "--csv", tmp_path, "--runs-dir", tmp_path / "runs")
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "is a folder" in err[0] and str(tmp_path) in err[0]
