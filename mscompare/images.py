"""The one image decoder, for training folders and uploads alike: safe opening and one rule per pixel mode.

Every decoded image becomes 8-bit grey (L) or 8-bit colour (RGB) by these rules, the same at train time
and at predict time, so a file is seen the same way by both:
- 1 (bilevel) and L: grey as stored.
- Alpha (RGBA, LA, PA, and P or RGB/L with a transparency key): composited onto white, as image viewers
  show it; a grey image with alpha stays grey.
- Palette (P): its colours, so RGB (grey palettes too).
- 16-bit grey (I;16, I;16B, ...) and 32-bit integer grey (I, which Pillow uses for many 16-bit PNGs): the
  16-bit range 0..65535 scaled to 0..255 (values outside it are clipped), never stretched per image, so
  every image of a dataset keeps one intensity scale.
- 32-bit float (F): refused, because its pixels have no fixed range; save such images as 8- or 16-bit.
- CMYK, YCbCr, LAB, HSV: Pillow's conversion to RGB.
"""
from __future__ import annotations

import io
import re
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

UPLOAD_FORMATS = ("PNG", "JPEG", "BMP", "WEBP", "GIF")  # what an upload may be; the uploader's types follow
ACCEPTED = ", ".join({"WEBP": "WebP"}.get(f, f) for f in UPLOAD_FORMATS[:-1]) + f" or {UPLOAD_FORMATS[-1]}"
MAX_BYTES = 20 * 2**20  # .streamlit/config.toml's server.maxUploadSize is this in MB
MAX_MB = MAX_BYTES // 2**20
MAX_PIXELS = 40_000_000
GRAY_MODES = ("1", "L", "LA", "La", "I", "F")
_ALPHA = ("RGBA", "LA", "La", "RGBa", "PA")


class ImageError(ValueError):
    """The file is not a usable image; the message says why (and names the file when given a name)."""


def upload_types() -> list[str]:
    """File extensions of UPLOAD_FORMATS, for st.file_uploader(type=...)."""
    return sorted(ext[1:] for ext, fmt in Image.registered_extensions().items() if fmt in UPLOAD_FORMATS)


def _too_many_pixels(w: int, h: int) -> str:
    return (f"the image has too many pixels: {w}x{h} is {w * h / 1e6:.1f} megapixels; "
            f"the limit is {MAX_PIXELS / 1e6:g} megapixels")


def _read(src: str | Path | bytes, fail, max_bytes: int | None) -> bytes:
    """The file's bytes; a path's size is checked (stat) before anything is read."""
    if not isinstance(src, (str, Path)):
        data = bytes(src)
    else:
        try:
            st = Path(src).stat()
            if not stat.S_ISREG(st.st_mode):
                raise fail("not a regular file")
            if max_bytes and st.st_size > max_bytes:
                raise fail(f"the file is {st.st_size / 2**20:.1f} MB; the limit is {max_bytes // 2**20} MB")
            data = Path(src).read_bytes()
        except OSError as e:
            raise fail(f"can't read the file: {e.strerror or e}") from e
    if len(data) == 0:
        raise fail("the file is empty")
    if max_bytes and len(data) > max_bytes:
        raise fail(f"the file is {len(data) / 2**20:.1f} MB; the limit is {max_bytes // 2**20} MB")
    return data


def open_image(src: str | Path | bytes, name: str | None = None, formats=UPLOAD_FORMATS,
               max_bytes: int | None = MAX_BYTES) -> Image.Image:
    """Decode an image file (first frame of an animation) into a loaded PIL image, or raise a clear ImageError.

    formats: the Pillow formats allowed (None: any Pillow reads). `name` starts every message; without it a
    message is just the reason. Images over MAX_PIXELS are refused before their pixels are decoded."""
    def fail(reason: str) -> ImageError:
        return ImageError(f"{name}: {reason}" if name else reason)

    data = _read(src, fail, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(formats) if formats else None)
            if im.width * im.height > MAX_PIXELS:
                raise fail(_too_many_pixels(im.width, im.height))
            im.seek(0)
            im.load()
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        n = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(n.group(1)) / 1e6:.0f} megapixels" if n else "more than Pillow allows"
        raise fail(f"the image has too many pixels ({size}); the limit is {MAX_PIXELS / 1e6:g} megapixels") from e
    except UnidentifiedImageError as e:  # its message names the BytesIO object: not for users
        raise fail(f"not a readable {ACCEPTED + ' ' if formats == UPLOAD_FORMATS else ''}image") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the file", str(e)) or type(e).__name__
        raise fail(f"the image is corrupt or truncated ({reason})") from e
    return im


def _deep_to_l(im: Image.Image) -> Image.Image:
    """I;16* / I -> L: the 16-bit range 0..65535 scaled to 0..255, values outside it clipped."""
    a = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
    return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L")


def _on_white(im: Image.Image) -> Image.Image:
    grey = im.mode in ("LA", "La") or (im.mode == "L" and "transparency" in im.info)
    im = im.convert("RGBA")
    out = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    return out.convert("L") if grey else out


def normalize(im: Image.Image) -> Image.Image:
    """Any mode -> L (grey modes) or RGB (colour modes), by the rules in this module's docstring."""
    try:
        if im.mode == "F":
            raise ImageError("32-bit float pixels (mode F) have no fixed range; save the image as 8- or 16-bit")
        if im.mode == "I" or im.mode.startswith("I;16"):
            return _deep_to_l(im)
        if im.mode in _ALPHA or "transparency" in im.info:
            return _on_white(im)
        if im.mode in ("1", "L"):
            return im.convert("L")
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"can't convert an image of mode {im.mode}: {e}") from e


def to_rgb(im: Image.Image) -> Image.Image:
    """Any mode -> RGB (normalize, then grey repeated into three channels)."""
    return normalize(im).convert("RGB")


def pixels(im: Image.Image, size: int | None = None) -> np.ndarray:
    """uint8 H x W (grey modes) or H x W x 3 (colour modes), resized to size x size (bilinear) when given."""
    im = normalize(im)
    if size and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im).copy()
