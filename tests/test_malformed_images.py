"""Malformed and unusual images, generated here: the CLI and the Predict page predict or give one clear error each."""
import io
import json
import re
import struct
import tomllib
import zlib

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import conftest
from conftest import ROOT, encode, mscompare_cli
from mscompare.images import ACCEPTED, MAX_BYTES, MAX_PIXELS, ImageError, open_image, upload_types

NOT_ACCEPTED = f"not a readable {ACCEPTED} image"


def digit(size=40, **kw):
    """conftest.digit, larger and bolder: a 40-px '1' as a user's photo of one."""
    return conftest.digit(size, bar=1 / 5, **kw)


def png(width, height, bit_depth, color_type, rows):
    """A PNG written by hand (IHDR, one zlib stream of rows, IEND), for headers Pillow won't write."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    idat = b"".join(z.compress(r) for r in rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bomb(side=30000):
    """A valid 1-bit PNG of side x side pixels (900 megapixels), about 100 KB compressed."""
    row = b"\x00" + bytes((side + 7) // 8)
    return png(side, side, 1, 0, (row for _ in range(side)))


def corpus():
    """File name -> (bytes, None if it must predict or a phrase its one error must contain)."""
    rgba = Image.new("RGBA", (50, 30), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (20, 5, 30, 25))
    pal = digit(mode="P")
    frames = [digit(mode="P"), Image.new("P", (40, 40), 0)]
    gray16 = Image.fromarray(np.asarray(digit(), np.uint16) * 257)
    la = Image.merge("LA", [digit(fg=0, bg=255), digit(fg=255, bg=0)])  # dark ink, transparent paper
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
           b"newpath 2 2 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n")
    return {
        "truncated.png": (encode(digit(), "PNG")[:70], "corrupt or truncated"),
        "text.png": (b"just some text, renamed .png\n" * 4, NOT_ACCEPTED),
        "empty.png": (b"", "empty"),
        "one_pixel.png": (encode(Image.new("L", (1, 1), 255), "PNG"), None),
        "tiny_8x8.png": (encode(digit(8), "PNG"), None),
        "wide_4000x3.png": (encode(Image.new("L", (4000, 3), 200), "PNG"), None),
        "tall_3x4000.png": (encode(Image.new("RGB", (3, 4000), (20, 200, 20)), "PNG"), None),
        "cmyk.jpg": (encode(digit(mode="RGB").convert("CMYK"), "JPEG"), None),
        "gray16.png": (encode(gray16, "PNG"), None),
        # PNG stops at 16 bits per sample, so a 32-bit integer (mode I) PNG is an invalid header.
        "int32.png": (png(4, 4, 32, 0, [b"\x00" + bytes(16)] * 4), NOT_ACCEPTED),
        "bilevel.png": (encode(digit(mode="1"), "PNG"), None),
        "animated.gif": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), None),
        "rgba.png": (encode(rgba, "PNG"), None),
        "gray_alpha.png": (encode(la, "PNG"), None),
        "palette_transparency.png": (encode(pal, "PNG", transparency=0), None),
        "light_background.bmp": (encode(digit(fg=0, bg=255, mode="RGB"), "BMP"), None),
        "digit.webp": (encode(digit(mode="RGB"), "WEBP"), None),
        "eps_renamed.png": (eps, NOT_ACCEPTED),
        "tiff_renamed.png": (encode(digit(), "TIFF"), NOT_ACCEPTED),
        "bomb.png": (bomb(), "too many pixels"),
    }


CORPUS = corpus()
BAD = {n for n, (_, err) in CORPUS.items() if err}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for name, (data, _) in CORPUS.items():
        (d / name).write_bytes(data)
    return d


def test_corpus_is_what_it_claims():
    """The modes are the ones Pillow really decodes; EPS and TIFF would open without formats=."""
    modes = {n: Image.open(io.BytesIO(CORPUS[n][0])).mode for n in
             ("cmyk.jpg", "gray16.png", "bilevel.png", "rgba.png", "gray_alpha.png", "palette_transparency.png")}
    assert modes == {"cmyk.jpg": "CMYK", "gray16.png": "I;16", "bilevel.png": "1", "rgba.png": "RGBA",
                     "gray_alpha.png": "LA", "palette_transparency.png": "P"}
    assert "transparency" in Image.open(io.BytesIO(CORPUS["palette_transparency.png"][0])).info
    assert Image.open(io.BytesIO(CORPUS["eps_renamed.png"][0])).format == "EPS"
    assert Image.open(io.BytesIO(CORPUS["tiff_renamed.png"][0])).format == "TIFF"
    assert getattr(Image.open(io.BytesIO(CORPUS["animated.gif"][0])), "n_frames", 1) == 2
    side = struct.unpack(">II", CORPUS["bomb.png"][0][16:24])
    assert side[0] * side[1] > MAX_PIXELS and len(CORPUS["bomb.png"][0]) < 200_000


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_open_image_decodes_or_says_why(name):
    data, err = CORPUS[name]
    if err is None:
        im = open_image(data, name=name)
        assert im.width * im.height >= 1
        return
    with pytest.raises(ImageError) as e:
        open_image(data, name=name)
    msg = str(e.value)
    assert msg.startswith(f"{name}: ") and err in msg and "BytesIO" not in msg, msg
    assert "\n" not in msg


def test_cli_predicts_the_good_files_and_names_each_bad_one(corpus_dir):
    files = [str(corpus_dir / n) for n in CORPUS]
    p = mscompare_cli("predict", "--set", "mnist", "--json", *files, cwd=ROOT)
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 1  # some files failed

    def no_nan(const):
        raise AssertionError(f"{const} in the JSON output")

    out = json.loads(p.stdout, parse_constant=no_nan)
    good = [f for f, n in zip(files, CORPUS) if n not in BAD]
    assert [o["image"] for o in out] == good
    for o in out:
        assert len(o["predictions"]) == 5
        for top in o["predictions"].values():
            assert len(top) == 3 and all(0 <= t["prob"] <= 1 for t in top)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == len(BAD), p.stderr
    for name in BAD:
        [line] = [ln for ln in lines if ln.startswith(f"mscompare: error: {corpus_dir / name}: ")]
        assert CORPUS[name][1] in line, line
    # the dark-on-white bar is inverted like MNIST and read as a one by most models
    light = next(o for o in out if o["image"].endswith("light_background.bmp"))["predictions"]
    assert sum(top[0]["label"] == "1" for top in light.values()) >= 3, light


def unescape(md):
    return re.sub(r"\\(.)", r"\1", md)


def predict_page():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/predict.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_predict_page_shows_predictions_or_one_error(app_env, name):
    data, err = CORPUS[name]
    at = predict_page()
    at.file_uploader[0].set_value((name, data, "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    if err is None:
        assert not at.error, [e.value for e in at.error]
        assert len(at.get("progress")) == 15 and len(at.get("image")) == 6  # the upload + 5 model inputs
        assert name in [t.value for t in at.text]
    else:
        assert len(at.error) == 1 and not at.get("progress")
        msg = unescape(at.error[0].value)
        assert msg.startswith("Can't use this file: ") and name in msg and err in msg, msg


def test_markdown_in_a_file_name_is_not_rendered(app_env):
    name = "**bold** [link](http://example.com) $x^2$ :red[x] <b>.png"
    at = predict_page()
    at.file_uploader[0].set_value((name, b"not an image", "image/png")).run()
    md = at.error[0].value
    assert "**" not in md.replace(r"\*", "") and "[link]" not in md and unescape(md).endswith(f"{name}: {NOT_ACCEPTED}")
    at.file_uploader[0].set_value((name, CORPUS["tiny_8x8.png"][0], "image/png")).run()
    assert not at.error and name in [t.value for t in at.text]  # st.text: shown as typed


def test_input_is_chosen_explicitly(app_env):
    at = predict_page()
    radio = next(r for r in at.radio if r.label == "Input")
    assert radio.options == ["Upload", "Sample", "Draw"]  # Draw: the mnist models are digit (1-channel) models
    at.file_uploader[0].set_value(("tiny.png", CORPUS["tiny_8x8.png"][0], "image/png")).run()
    assert "tiny.png" in [t.value for t in at.text]
    radio.set_value("Sample").run()
    assert not at.file_uploader and not at.get("progress") and at.info  # the upload doesn't win; pick a sample
    next(s for s in at.selectbox if s.label == "Sample test image").set_value("7_0.png").run()
    assert not at.exception and "7_0.png" in [t.value for t in at.text] and len(at.get("progress")) == 15


def test_upload_limits_agree(app_env):
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["maxUploadSize"] == MAX_BYTES // 2**20
    up = predict_page().file_uploader[0]
    assert sorted(t.lstrip(".") for t in up.allowed_type) == upload_types()
    assert {"png", "jpg", "jpeg", "bmp", "webp", "gif"} <= set(upload_types()) and "tif" not in upload_types()


def test_drawing_pad_is_a_third_input_for_digit_models(app_env):
    at = predict_page()
    next(r for r in at.radio if r.label == "Input").set_value("Draw").run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert not at.file_uploader and any("Draw a digit" in i.value for i in at.info)  # the pad, still empty
    next(r for r in at.radio if r.label == "Checkpoint set").set_value("cifar10").run()
    assert not at.exception and next(r for r in at.radio if r.label == "Input").options == ["Upload", "Sample"]
