"""Reading users' digit images: loading any format, MNIST-style preprocessing, streaming predictions.

Every image is a tiny synthetic one drawn with Pillow in tmp_path; no MNIST files are needed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageCms, ImageDraw, ImageFilter, PngImagePlugin

from mnistctl.models import CompactNet
from mnistctl.predict import (
    IMAGE_SUFFIXES,
    ImageError,
    Prediction,
    _open_with_pillow,
    _read_plain_png,
    expand_inputs,
    load_digit,
    load_image,
    predict_paths,
    preprocess,
)

# --------------------------------------------------------------------------------------------- helpers


def digit_mask(size: tuple[int, int] = (120, 120), box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """A "0" with a tail (so it has no symmetry to hide mistakes): 255 ink on 0, mode "L", not anti-aliased."""
    w, h = size
    x0, y0, x1, y1 = box or (w // 3, h // 4, 2 * w // 3, 3 * h // 4)
    stroke = max(2, (x1 - x0) // 6)
    img = Image.new("L", size, 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse((x0, y0, x1, y1 - (y1 - y0) // 3), outline=255, width=stroke)
    draw.line((x1 - stroke // 2, y0 + (y1 - y0) // 3, x0 + (x1 - x0) // 3, y1), fill=255, width=stroke)
    return img


def black_on_white(size: tuple[int, int] = (120, 120), **kw) -> Image.Image:
    return Image.eval(digit_mask(size, **kw), lambda v: 255 - v)


def centre_of_mass(t: torch.Tensor) -> tuple[float, float]:
    x = t.float()
    idx = torch.arange(x.shape[0], dtype=torch.float32)
    total = x.sum()
    return float((x.sum(1) * idx).sum() / total), float((x.sum(0) * idx).sum() / total)


def ink_bbox(t: torch.Tensor, level: int = 0) -> tuple[int, int]:
    """(height, width) of the pixels brighter than ``level``."""
    rows = (t > level).any(1).nonzero().flatten()
    cols = (t > level).any(0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def border(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t[0], t[-1], t[:, 0], t[:, -1]])


def save(img: Image.Image, path: Path, **kw) -> str:
    img.save(path, **kw)
    return str(path)


def mnist_like() -> torch.Tensor:
    """A 28×28 white-on-black digit as MNIST has them: anti-aliased, dark border."""
    img = digit_mask((28, 28), box=(8, 4, 20, 24)).filter(ImageFilter.GaussianBlur(0.7))
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(28, 28).clone()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``×``height`` pixels: enough for Pillow to read the size, nothing to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------- polarity


def test_black_on_white_is_inverted_and_white_on_black_is_not() -> None:
    from_dark_ink = preprocess(black_on_white())
    from_light_ink = preprocess(digit_mask())
    assert torch.equal(from_dark_ink, from_light_ink)
    assert border(from_dark_ink).max() == 0
    assert from_dark_ink.max() == 255
    assert 40 < (from_dark_ink > 0).sum() < 400  # a digit's worth of ink, not a filled square


def test_invert_can_be_forced() -> None:
    assert torch.equal(preprocess(black_on_white(), invert="yes"), preprocess(black_on_white()))
    assert torch.equal(preprocess(digit_mask(), invert="no"), preprocess(digit_mask()))
    # Forced the wrong way, the "ink" is the background colour: nothing stands out from it.
    with pytest.raises(ImageError, match="blank"):
        preprocess(black_on_white(), invert="no")
    with pytest.raises(ImageError, match="blank"):
        preprocess(digit_mask(), invert="yes")
    with pytest.raises(ValueError, match="invert"):
        preprocess(digit_mask(), invert="maybe")


def test_no_preprocess_only_resizes_and_applies_the_invert_choice(tmp_path: Path) -> None:
    pixels = mnist_like()
    path = save(Image.frombytes("L", (28, 28), bytes(pixels.flatten().tolist())), tmp_path / "d.png")
    assert torch.equal(load_digit(path, preprocess_image=False), pixels)
    assert torch.equal(load_digit(path, preprocess_image=False, invert="yes"), 255 - pixels)
    big = save(black_on_white((90, 60)), tmp_path / "big.png")
    out = load_digit(big, preprocess_image=False)
    assert out.shape == (28, 28) and out.dtype == torch.uint8
    assert border(out).max() == 0  # inverted (auto) but not cropped or centred
    assert torch.equal(load_digit(big, preprocess_image=False, invert="no"), 255 - out)


# --------------------------------------------------------------------------------------------- geometry


def test_off_centre_digit_is_centred_by_mass_and_fitted_to_20px() -> None:
    img = black_on_white((400, 300), box=(20, 30, 90, 150))  # top-left corner of a big page
    out = preprocess(img)
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    height, width = ink_bbox(out)
    assert height in (19, 20, 21)  # the longer side, fitted to 20 (Lanczos may ring by a pixel)
    assert width < height


def test_aspect_ratio_is_kept_for_a_tall_thin_stroke() -> None:
    img = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(img).rectangle((140, 40, 152, 260), fill=0)  # 13 × 221 px
    out = preprocess(img)
    height, width = ink_bbox(out, level=20)
    assert 19 <= height <= 20
    assert width <= 3
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_mnist_format_input_passes_through_bit_identical(tmp_path: Path) -> None:
    pixels = mnist_like()
    assert border(pixels).max() == 0 and int(pixels.max()) > 0
    path = save(Image.frombytes("L", (28, 28), bytes(pixels.flatten().tolist())), tmp_path / "mnist.png")
    out = load_digit(path)
    assert out.dtype == torch.uint8 and torch.equal(out, pixels)


def test_jpeg_noise_and_gray_paper_leave_a_clean_black_background(tmp_path: Path) -> None:
    page = Image.eval(black_on_white((160, 120), box=(70, 20, 130, 100)), lambda v: 60 + v * 140 // 255)
    path = save(page.convert("RGB"), tmp_path / "gray.jpg", quality=60)  # gray ink (60) on gray paper (200)
    out = load_digit(path)
    assert border(out).max() == 0
    assert out.max() == 255  # faint ink is stretched to MNIST's full strength
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_a_speck_far_from_the_digit_does_not_shrink_it() -> None:
    img = black_on_white((300, 300), box=(120, 100, 190, 220))
    ImageDraw.Draw(img).rectangle((5, 5, 7, 7), fill=0)
    height, _ = ink_bbox(preprocess(img), level=20)
    assert height >= 19


def test_blank_image_is_an_error(tmp_path: Path) -> None:
    for colour in (0, 255, 180):
        path = save(Image.new("L", (50, 50), colour), tmp_path / f"blank{colour}.png")
        with pytest.raises(ImageError, match="blank image: no ink found"):
            load_digit(path)
    dusty = Image.new("L", (400, 300), 235)
    ImageDraw.Draw(dusty).rectangle((200, 100, 201, 101), fill=30)  # a speck is not a digit
    with pytest.raises(ImageError, match="blank image"):
        preprocess(dusty)


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("1", "png"), ("L", "png"), ("RGB", "png"), ("RGB", "bmp"), ("P", "gif"), ("CMYK", "tif"), ("LA", "png")],
)
def test_every_mode_gives_the_same_digit(tmp_path: Path, mode: str, suffix: str) -> None:
    reference = preprocess(black_on_white())
    img = black_on_white().convert(mode)
    out = load_digit(save(img, tmp_path / f"d.{suffix}"))
    assert torch.equal(out, reference)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    img = Image.new("I;16", (60, 60), 20000)  # mid-gray paper; clipping to 8 bits would make it all white
    ImageDraw.Draw(img).rectangle((25, 10, 35, 50), fill=60000)
    ImageDraw.Draw(img).point((0, 0), fill=65535)
    path = save(img, tmp_path / "deep.png")
    gray = load_image(path)
    assert gray.mode == "L"
    assert gray.getpixel((5, 5)) in (77, 78) and gray.getpixel((30, 30)) in (233, 234)
    assert gray.getpixel((0, 0)) == 255
    out = load_digit(path)
    assert border(out).max() == 0 and ink_bbox(out, level=20)[0] in (19, 20)


def test_rgba_transparent_background_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (120, 120), (0, 0, 0, 0))  # transparent *black*: read as black, there is no digit
    img.putalpha(digit_mask())
    path = save(img, tmp_path / "alpha.png")
    gray = load_image(path)
    assert gray.getpixel((0, 0)) == 255
    assert torch.equal(load_digit(path), preprocess(black_on_white()))


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (120, 120), 0)
    img.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both entries black; entry 0 is transparent
    img.paste(1, mask=digit_mask())
    path = save(img, tmp_path / "pal.png", transparency=0)
    assert torch.equal(load_digit(path), preprocess(black_on_white()))


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    tall = Image.new("L", (80, 80), 255)
    ImageDraw.Draw(tall).rectangle((36, 10, 44, 70), fill=0)
    wide = Image.new("L", (80, 80), 255)
    ImageDraw.Draw(wide).rectangle((10, 36, 70, 44), fill=0)
    path = tmp_path / "anim.gif"
    tall.save(path, save_all=True, append_images=[wide, wide], duration=100, loop=0)
    height, width = ink_bbox(load_digit(path), level=20)
    assert height > 2 * width


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (120, 60), "white")  # a horizontal bar, stored sideways
    ImageDraw.Draw(stored).rectangle((10, 25, 110, 35), fill="black")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = save(stored, tmp_path / "phone.jpg", exif=exif, quality=95)
    gray = load_image(path)
    assert gray.size == (60, 120)
    height, width = ink_bbox(load_digit(path), level=40)
    assert height > 3 * width


# --------------------------------------------------------------------------------------------- plain PNG reader


def _busy(mode: str, size: tuple[int, int] = (45, 37)) -> Image.Image:
    """An image of ``mode`` whose rows need every PNG filter type: a digit, gradients, noise, varied alpha."""
    img = black_on_white(size).convert(mode)
    noise = Image.effect_noise(size, 60).convert("L")
    gradient = Image.linear_gradient("L").resize(size)
    bands = [Image.blend(band, noise if k % 2 else gradient, 0.3) for k, band in enumerate(img.split())]
    if mode in ("LA", "RGBA"):
        bands[-1] = gradient
    return Image.merge(mode, bands)


@pytest.mark.parametrize("mode", ["L", "RGB", "LA", "RGBA"])
@pytest.mark.parametrize("options", [{}, {"optimize": True}, {"compress_level": 0}])
def test_plain_png_reader_gives_pillows_pixels(tmp_path: Path, mode: str, options: dict) -> None:
    img = _busy(mode)
    path = save(img, tmp_path / "busy.png", **options)
    fast = _read_plain_png(path)
    assert fast is not None and fast.mode == mode and fast.size == img.size
    with Image.open(path) as reference:
        assert fast.tobytes() == reference.tobytes()
    assert load_image(path).tobytes() == _open_with_pillow(path).tobytes()


def test_plain_png_reader_reads_a_file_bigger_than_one_read(tmp_path: Path) -> None:
    path = save(_busy("RGB", (300, 250)), tmp_path / "big.png", compress_level=0)
    assert Path(path).stat().st_size > 3 * 65536
    fast = _read_plain_png(path)
    with Image.open(path) as reference:
        assert fast is not None and fast.tobytes() == reference.tobytes()


def test_plain_png_reader_takes_harmless_chunks(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "a paint program")
    info.add_itxt("Comment", "drawn on a tablet")
    path = save(_busy("L"), tmp_path / "text.png", pnginfo=info, dpi=(300, 300))
    fast = _read_plain_png(path)
    assert fast is not None and fast.tobytes() == _open_with_pillow(path).tobytes()


def test_plain_png_reader_leaves_everything_else_to_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = _busy("L")
    exif = Image.Exif()
    exif[0x0112] = 6
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    packed = PngImagePlugin.PngInfo()
    packed.add_itxt("Comment", "compressed", zip=True)
    cases = {
        "palette.png": (img.convert("P"), {}),
        "deep.png": (Image.new("I;16", (40, 40), 300), {}),
        "bits.png": (img.convert("1"), {}),
        "trns.png": (img, {"transparency": 0}),
        "exif.png": (img, {"exif": exif}),
        "xmp.png": (img, {"pnginfo": xmp}),
        "packed-text.png": (img, {"pnginfo": packed}),
        "icc.png": (img.convert("RGB"), {"icc_profile": srgb}),
        "anim.png": (img, {"save_all": True, "append_images": [img.rotate(90)]}),
        "not-a-png.png": (img, {"format": "BMP"}),
    }
    for name, (im, options) in cases.items():
        assert _read_plain_png(save(im, tmp_path / name, **options)) is None, name
    plain = save(img, tmp_path / "plain.png")
    data = Path(plain).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert _read_plain_png(tmp_path / "cut.png") is None  # no IEND
    idat = data.index(b"IDAT")
    broken = data[: idat + 4] + bytes(b ^ 0x55 for b in data[idat + 4 : idat + 40]) + data[idat + 40 :]
    (tmp_path / "broken.png").write_bytes(broken)
    assert _read_plain_png(tmp_path / "broken.png") is None  # zlib stream damaged
    assert _read_plain_png(tmp_path / "missing.png") is None
    (tmp_path / "long-ihdr.png").write_bytes(data[:11] + b"\x0e" + data[12:])  # IHDR must be 13 bytes
    assert _read_plain_png(tmp_path / "long-ihdr.png") is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert _read_plain_png(plain) is None  # over the limit: Pillow's reader refuses it with its message


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _crafted_pngs() -> dict[str, bytes]:
    """Hand-made PNGs, valid and not, that a reader of chunks could get wrong."""
    w, h = 28, 28
    pixels = zlib.compress(b"".join(b"\0" + bytes((x * 9 + y * 3) % 256 for x in range(w)) for y in range(h)))

    def ihdr(width: int = w, height: int = h) -> bytes:
        return struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def png(*chunks: bytes) -> bytes:
        return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)

    good_ihdr, idat, iend = _chunk(b"IHDR", ihdr()), _chunk(b"IDAT", pixels), _chunk(b"IEND", b"")
    stale = zlib.crc32(b"IHDR" + ihdr())
    idat_a, idat_b = _chunk(b"IDAT", pixels[:40]), _chunk(b"IDAT", pixels[40:])
    return {
        "plain": png(good_ihdr, idat, iend),
        "split IDAT": png(good_ihdr, idat_a, idat_b, iend),
        "empty IDAT first": png(good_ihdr, _chunk(b"IDAT", b""), idat, iend),
        "junk after IEND": png(good_ihdr, idat, iend, b"junk" * 10),
        "IHDR height changed, CRC stale": png(_chunk(b"IHDR", ihdr(height=20), crc=stale), idat, iend),
        "tEXt with a bad CRC": png(good_ihdr, _chunk(b"tEXt", b"Comment\0hi", crc=0), idat, iend),
        "IDATs apart": png(good_ihdr, idat_a, _chunk(b"tEXt", b"a\0b"), idat_b, iend),
        "pHYs too short": png(good_ihdr, _chunk(b"pHYs", b""), idat, iend),
        "gAMA too short, after IDAT": png(good_ihdr, idat, _chunk(b"gAMA", b""), iend),
        "zTXt, unknown method": png(good_ihdr, _chunk(b"zTXt", b"Comment\0\x01xx"), idat, iend),
        "iCCP, unknown method": png(good_ihdr, _chunk(b"iCCP", b"p\0\x01xx"), idat, iend),
        "zTXt bomb": png(good_ihdr, _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * 2_000_000)), idat, iend),
        "IDAT cut short": png(good_ihdr, idat[:30]),
        "chunk longer than the file": png(good_ihdr, struct.pack(">I", 1 << 30) + b"IDAT" + pixels),
        "2 MB after IEND": png(good_ihdr, idat, iend, bytes(2_000_000)),
    }


@pytest.mark.parametrize("name", list(_crafted_pngs()))
def test_load_image_agrees_with_pillow_on_crafted_pngs(tmp_path: Path, name: str) -> None:
    path = tmp_path / "crafted.png"
    path.write_bytes(_crafted_pngs()[name])

    def outcome(read) -> tuple[str, object]:
        try:
            return "ok", read(path).tobytes()
        except ImageError as exc:
            return "error", str(exc)

    assert outcome(load_image) == outcome(_open_with_pillow)
    fast = {"plain", "split IDAT", "empty IDAT first", "junk after IEND"}  # the rest are Pillow's to judge
    assert (_read_plain_png(path) is not None) == (name in fast)


def test_png_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("L", (120, 60), 255)
    ImageDraw.Draw(stored).rectangle((10, 25, 110, 35), fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    assert load_image(save(stored, tmp_path / "turned.png", exif=exif)).size == (60, 120)


# --------------------------------------------------------------------------------------------- bad files


def _reason(path: Path | str) -> str:
    with pytest.raises(ImageError) as info:
        load_digit(path)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text and len(text) < 120
    return text


def test_unusable_files_give_one_line_reasons(tmp_path: Path) -> None:
    good = black_on_white((64, 64))
    png = tmp_path / "good.png"
    good.save(png)
    jpg = tmp_path / "good.jpg"
    good.convert("RGB").save(jpg, quality=90)

    (tmp_path / "empty.png").write_bytes(b"")
    assert _reason(tmp_path / "empty.png") == "empty file (0 bytes)"
    (tmp_path / "page.png").write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    assert _reason(tmp_path / "page.png").startswith("not an image file")
    (tmp_path / "notes.jpg").write_text("just some text\n")
    assert _reason(tmp_path / "notes.jpg").startswith("not an image file")
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    assert "truncated" in _reason(tmp_path / "cut.png")
    (tmp_path / "cut.jpg").write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    assert "truncated" in _reason(tmp_path / "cut.jpg")
    (tmp_path / "head.png").write_bytes(png.read_bytes()[:30])
    assert "truncated" in _reason(tmp_path / "head.png")
    Image.new("L", (1, 1), 0).save(tmp_path / "dot.png")
    assert _reason(tmp_path / "dot.png") == "image too small (1x1 pixels)"
    assert _reason(tmp_path / "missing.png") == "no such file"
    (tmp_path / "folder.png").mkdir()
    assert _reason(tmp_path / "folder.png") == "is a directory"


def test_decompression_bombs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(png_header_only(20000, 20000))  # past Pillow's hard limit
    reason = _reason(tmp_path / "bomb.png")
    assert reason.startswith("image too large (20000x20000 pixels; limit")
    # Between Pillow's limit and twice it, Pillow only warns: that warning must stop us too.
    (tmp_path / "big.png").write_bytes(png_header_only(10000, 10000))
    assert _reason(tmp_path / "big.png").startswith("image too large (10000x10000 pixels")


def test_a_real_compressed_bomb_is_refused_cheaply(tmp_path: Path) -> None:
    path = tmp_path / "real-bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # a few KB on disk, 400 Mpx decoded
    assert path.stat().st_size < 200_000
    assert _reason(path).startswith("image too large (20000x20000 pixels")


# --------------------------------------------------------------------------------------------- predicting


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return CompactNet(widths=(4, 8))


NORM = {"mean": 0.0, "std": 1.0}


def _mixed_files(tmp_path: Path, n: int = 40) -> list[str]:
    paths = []
    for i in range(n):
        box = (10 + i % 7, 10 + i % 5, 40 + i % 11, 50 + i % 3)
        paths.append(save(black_on_white((64, 64), box=box), tmp_path / f"{i:03d}.png"))
    (tmp_path / "bad.png").write_bytes(b"<html></html>")
    paths.insert(n // 2, str(tmp_path / "bad.png"))
    paths.append(str(tmp_path / "missing.png"))
    return paths


@pytest.mark.parametrize("workers", [0, 2])
def test_predict_paths_keeps_order_and_reports_bad_files(
    tmp_path: Path, tiny_model: torch.nn.Module, workers: int
) -> None:
    paths = _mixed_files(tmp_path)
    preds = list(
        predict_paths(paths, tiny_model, NORM, torch.device("cpu"), batch_size=8, workers=workers, keep_pixels=True)
    )
    assert [p.index for p in preds] == list(range(len(paths)))
    assert [p.path for p in preds] == paths
    bad = [p for p in preds if p.error]
    assert [p.path for p in bad] == [str(tmp_path / "bad.png"), str(tmp_path / "missing.png")]
    assert bad[0].error.startswith("not an image file") and bad[1].error == "no such file"
    assert all(p.digit is None and p.probabilities is None for p in bad)
    for p in preds:
        if p.error:
            continue
        assert isinstance(p, Prediction) and 0 <= p.digit <= 9
        assert len(p.probabilities) == 10 and abs(sum(p.probabilities) - 1) < 1e-5
        assert p.confidence == pytest.approx(max(p.probabilities))
        assert p.probabilities.index(max(p.probabilities)) == p.digit
        assert p.pixels.shape == (28, 28) and p.pixels.dtype == torch.uint8
        assert torch.equal(p.pixels, load_digit(p.path))


def test_predict_paths_matches_a_plain_forward_pass(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    paths = [save(black_on_white((50, 50), box=(5 + i, 8, 30 + i, 45)), tmp_path / f"{i}.png") for i in range(5)]
    norm = {"mean": 0.1307, "std": 0.3081}
    preds = list(predict_paths(paths, tiny_model, norm, torch.device("cpu"), workers=1))
    x = torch.stack([load_digit(p) for p in paths]).float().unsqueeze(1)
    with torch.no_grad():
        expected = tiny_model.eval()((x / 255 - 0.1307) / 0.3081).softmax(1)
    got = torch.tensor([p.probabilities for p in preds])
    assert torch.allclose(got, expected, atol=1e-5)
    assert all(p.pixels is None for p in preds)  # only with keep_pixels


def test_predict_paths_streams_and_can_stop_early(tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import mnistctl.predict as predict_mod

    loaded: list[str] = []
    lock = threading.Lock()

    digit = Image.frombytes("L", (28, 28), bytes(mnist_like().flatten().tolist()))

    def fake_load(path: str) -> Image.Image:
        with lock:
            loaded.append(path)
        return digit

    monkeypatch.setattr(predict_mod, "load_image", fake_load)
    paths = [f"img{i}.png" for i in range(5000)]
    stream = predict_paths(paths, tiny_model, NORM, torch.device("cpu"), batch_size=512, workers=2)
    first = next(stream)
    assert first.index == 0 and first.error is None
    assert len(loaded) < 1000  # the first result came long before the last file was read
    stream.close()  # stopping early neither hangs nor goes on reading everything
    assert len(loaded) < 1000
    assert list(predict_paths([], tiny_model, NORM, torch.device("cpu"))) == []


def test_predict_paths_leaves_the_warning_filters_as_they_were(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    import warnings

    before = list(warnings.filters)
    list(predict_paths(_mixed_files(tmp_path, 100), tiny_model, NORM, torch.device("cpu"), batch_size=16, workers=4))
    assert list(warnings.filters) == before


def test_predict_paths_without_preprocessing(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = save(black_on_white((90, 60)), tmp_path / "d.png")
    (pred,) = predict_paths([path], tiny_model, NORM, torch.device("cpu"), preprocess_image=False, keep_pixels=True)
    assert torch.equal(pred.pixels, load_digit(path, preprocess_image=False))


# --------------------------------------------------------------------------------------------- inputs


def test_expand_inputs(tmp_path: Path) -> None:
    d = tmp_path / "scans"
    (d / "sub").mkdir(parents=True)
    for name in ("b.PNG", "a.jpg", "c.txt", ".hidden.png", "sub/z.gif", "sub/y.tiff"):
        (d / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only-dirs" / "inner").mkdir(parents=True)
    (tmp_path / "only-dirs" / "inner" / "x.png").write_bytes(b"x")
    (tmp_path / "odd.name").write_bytes(b"x")

    paths, problems = expand_inputs([str(d)], recursive=False)
    assert paths == [str(d / "a.jpg"), str(d / "b.PNG")] and problems == []
    paths, _ = expand_inputs([str(d)], recursive=True)
    assert paths == [str(d / "a.jpg"), str(d / "b.PNG"), str(d / "sub" / "y.tiff"), str(d / "sub" / "z.gif")]

    inputs = [str(tmp_path / "odd.name"), str(tmp_path / "nope.png"), str(tmp_path / "empty"), str(d / "c.txt")]
    paths, problems = expand_inputs(inputs, recursive=False)
    assert paths == [str(tmp_path / "odd.name"), str(d / "c.txt")]  # files are taken whatever their suffix
    assert problems == [
        f"no such file or directory: {tmp_path / 'nope.png'}",
        f"no images in directory {tmp_path / 'empty'}",
    ]

    paths, problems = expand_inputs([str(tmp_path / "only-dirs")], recursive=False)
    assert paths == [] and "--recursive" in problems[0]
    assert expand_inputs([str(tmp_path / "only-dirs")], recursive=True)[0] == [
        str(tmp_path / "only-dirs" / "inner" / "x.png")
    ]


def test_image_suffixes() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"} <= set(
        IMAGE_SUFFIXES
    )


# --------------------------------------------------------------------------------------------- stroke width


def ring(side: int, width: int) -> Image.Image:
    """A white ring ("0") of the given stroke width on black, filling a side×side image."""
    img = Image.new("L", (side, side), 0)
    ImageDraw.Draw(img).ellipse((0, 0, side - 1, side - 1), outline=255, width=width)
    return img


@pytest.mark.parametrize("width", [3, 6, 12])
def test_stroke_width_is_measured(width: int) -> None:
    from mnistctl.predict import _stroke_width

    assert _stroke_width(ring(160, width)) == pytest.approx(width, rel=0.2)


def test_thin_and_thick_strokes_come_out_mnist_wide() -> None:
    """A hairline digit and a marker digit, drawn big: both reach the network with MNIST's stroke width."""
    from mnistctl.predict import STROKE_HIGH, STROKE_LOW, _stroke_width

    def width_seen(stroke: int) -> float:
        page = Image.new("L", (400, 400), 255)
        page.paste(0, (100, 60), ring(240, stroke))  # black ink on white: inverted, cropped, fitted to 20 px
        seen = preprocess(page)
        big = Image.frombytes("L", (28, 28), bytes(seen.flatten().tolist())).resize((112, 112), Image.BILINEAR)
        return _stroke_width(big) / 4

    thin, thick = width_seen(3), width_seen(60)  # 0.25 and 5 px of the 20 px box before the change
    assert STROKE_LOW - 0.5 <= thin <= STROKE_HIGH + 0.5
    assert STROKE_LOW - 0.5 <= thick <= STROKE_HIGH + 0.5
    assert width_seen(24) == pytest.approx(2.0, abs=0.6)  # MNIST-like already: left alone


def test_stroke_normalisation_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnistctl.predict as predict

    page = Image.new("L", (400, 400), 255)
    page.paste(0, (100, 60), ring(240, 3))
    with_fix = preprocess(page)
    monkeypatch.setattr(predict, "NORMALISE_STROKES", False)
    assert int((preprocess(page) > 127).sum()) < int((with_fix > 127).sum())  # the hairline stays thin


def test_decoding_threads_and_torch_threads_share_the_cores() -> None:
    from mnistctl.predict import share_cores

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert share_cores(torch.device("cpu"), None, None) == 2 and torch.get_num_threads() == 2
        torch.set_num_threads(4)
        assert share_cores(torch.device("cpu"), 3, 4) == 3 and torch.get_num_threads() == 4  # --threads wins
        assert share_cores(torch.device("meta"), 1, None) == 1 and torch.get_num_threads() == 4  # not on the CPU
        torch.set_num_threads(1)
        assert share_cores(torch.device("cpu"), None, None) == 1 and torch.get_num_threads() == 1
        assert share_cores(torch.device("cpu"), 0, None) == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
