"""Reading users' digit images: loading any format with Pillow, MNIST-style preprocessing with numpy.

Every image is a tiny synthetic one drawn with Pillow in tmp_path; no MNIST files are needed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import black_on_white, centre_of_mass, digit_mask, mnist_like, save
from PIL import Image, ImageDraw

from mnistctl.imaging import ImageError, digit_input, load_image, preprocess

# --------------------------------------------------------------------------------------------- helpers


def gray(img: Image.Image) -> np.ndarray:
    return np.array(img.convert("L"))


def ink_bbox(a: np.ndarray, level: int = 0) -> tuple[int, int]:
    """(height, width) of the pixels brighter than ``level``."""
    rows = np.flatnonzero((a > level).any(1))
    cols = np.flatnonzero((a > level).any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def border(a: np.ndarray) -> np.ndarray:
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``×``height`` pixels: enough for Pillow to read the size, nothing to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------- polarity


def test_black_on_white_is_inverted_and_white_on_black_is_not() -> None:
    from_dark_ink = preprocess(gray(black_on_white()))
    from_light_ink = preprocess(gray(digit_mask()))
    assert from_dark_ink.shape == (28, 28) and from_dark_ink.dtype == np.uint8
    assert np.array_equal(from_dark_ink, from_light_ink)
    assert border(from_dark_ink).max() == 0
    assert from_dark_ink.max() == 255
    assert 40 < np.count_nonzero(from_dark_ink) < 400  # a digit's worth of ink, not a filled square


def test_invert_can_be_forced() -> None:
    dark_ink, light_ink = gray(black_on_white()), gray(digit_mask())
    assert np.array_equal(preprocess(dark_ink, invert="yes"), preprocess(dark_ink))
    assert np.array_equal(preprocess(light_ink, invert="no"), preprocess(light_ink))
    # Forced the wrong way, the "ink" is the background colour: nothing stands out from it.
    with pytest.raises(ImageError, match="blank"):
        preprocess(dark_ink, invert="no")
    with pytest.raises(ImageError, match="blank"):
        preprocess(light_ink, invert="yes")
    with pytest.raises(ValueError, match="invert"):
        preprocess(light_ink, invert="maybe")


def test_preprocess_wants_a_gray_array() -> None:
    with pytest.raises(TypeError, match="2-D uint8"):
        preprocess(np.zeros((28, 28, 3), np.uint8))
    with pytest.raises(TypeError, match="2-D uint8"):
        preprocess(np.zeros((28, 28), np.float32))


def test_no_preprocess_only_resizes_and_applies_the_invert_choice(tmp_path: Path) -> None:
    pixels = mnist_like()
    path = save(Image.fromarray(pixels), tmp_path / "d.png")
    assert np.array_equal(digit_input(path, preprocess_image=False), pixels)
    assert np.array_equal(digit_input(path, preprocess_image=False, invert="yes"), 255 - pixels)
    big = save(black_on_white((90, 60)), tmp_path / "big.png")
    out = digit_input(big, preprocess_image=False)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert border(out).max() == 0  # inverted (auto) but not cropped or centred
    assert np.array_equal(digit_input(big, preprocess_image=False, invert="no"), 255 - out)


# --------------------------------------------------------------------------------------------- geometry


def test_off_centre_digit_is_centred_by_mass_and_fitted_to_20px() -> None:
    out = preprocess(gray(black_on_white((400, 300), box=(20, 30, 90, 150))))  # top-left corner of a big page
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    height, width = ink_bbox(out)
    assert height in (19, 20, 21)  # the longer side, fitted to 20 (Lanczos may ring by a pixel)
    assert width < height


def test_aspect_ratio_is_kept_for_a_tall_thin_stroke() -> None:
    img = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(img).rectangle((140, 40, 152, 260), fill=0)  # 13 × 221 px
    out = preprocess(gray(img))
    height, width = ink_bbox(out, level=20)
    assert 19 <= height <= 20
    assert width <= 3
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_mnist_format_input_passes_through_bit_identical(tmp_path: Path) -> None:
    pixels = mnist_like()
    assert border(pixels).max() == 0 and int(pixels.max()) > 0
    out = digit_input(save(Image.fromarray(pixels), tmp_path / "mnist.png"))
    assert out.dtype == np.uint8 and np.array_equal(out, pixels)


def test_a_huge_photo_is_reduced_first_and_reads_like_a_small_one() -> None:
    small = preprocess(gray(black_on_white((300, 300), box=(100, 60, 200, 240))))
    huge = preprocess(gray(black_on_white((3000, 3000), box=(1000, 600, 2000, 2400))))
    assert ink_bbox(huge, level=20)[0] in (19, 20, 21)
    assert np.abs(huge.astype(int) - small.astype(int)).mean() < 20  # the same digit, give or take resampling


def test_jpeg_noise_and_gray_paper_leave_a_clean_black_background(tmp_path: Path) -> None:
    page = Image.eval(black_on_white((160, 120), box=(70, 20, 130, 100)), lambda v: 60 + v * 140 // 255)
    path = save(page.convert("RGB"), tmp_path / "gray.jpg", quality=60)  # gray ink (60) on gray paper (200)
    out = digit_input(path)
    assert border(out).max() == 0
    assert out.max() == 255  # faint ink is stretched to MNIST's full strength
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_a_speck_far_from_the_digit_does_not_shrink_it() -> None:
    img = black_on_white((300, 300), box=(120, 100, 190, 220))
    ImageDraw.Draw(img).rectangle((5, 5, 7, 7), fill=0)
    height, _ = ink_bbox(preprocess(gray(img)), level=20)
    assert height >= 19


@pytest.mark.parametrize("page", [(3000, 3000), (4000, 3000), (6000, 400)])
def test_a_small_digit_on_a_big_page_is_read_from_the_page_s_own_pixels(page: tuple[int, int]) -> None:
    """A digit 28 px high is a digit on a page of any size (not "only specks"), and the network sees what it
    would of the same digit on a small canvas: the page is reduced only to find the ink."""
    small = black_on_white((60, 60), box=(16, 16, 40, 44))
    big = Image.new("L", page, 255)
    big.paste(small, (page[0] // 2 - 17, page[1] // 3 - 9))
    on_page, alone = preprocess(gray(big)), preprocess(gray(small))
    assert np.abs(on_page.astype(int) - alone).mean() < 4, np.abs(on_page.astype(int) - alone).mean()


def test_a_20_px_digit_on_an_88_megapixel_page_is_read_wherever_it_lies() -> None:
    """Reduced ten times to find the ink, the digit is 2 px there: where it lies on the reduction's grid must
    not make it dust."""
    page = np.full((9400, 9400), 235, np.uint8)
    for offset in range(0, 10, 3):
        img = Image.fromarray(page)
        x, y = 4000 + offset, 5000 + offset
        ImageDraw.Draw(img).ellipse((x, y, x + 14, y + 20), outline=30, width=3)
        assert preprocess(np.asarray(img)).max() == 255


def test_a_speck_on_a_big_page_is_still_dust() -> None:
    page = Image.new("L", (4000, 3000), 235)
    ImageDraw.Draw(page).rectangle((2000, 1000, 2005, 1005), fill=30)  # 6 px: dust, at any page size
    with pytest.raises(ImageError, match="only specks"):
        preprocess(gray(page))


def test_blank_image_is_an_error(tmp_path: Path) -> None:
    for colour in (0, 255, 180):
        for side in (28, 50, 100):  # 28x28 too: an all-black MNIST-sized image is not a "1"
            path = save(Image.new("L", (side, side), colour), tmp_path / f"blank{colour}-{side}.png")
            for options in ({}, {"preprocess_image": False}, {"invert": "no"}, {"invert": "yes"}):
                with pytest.raises(ImageError, match="^blank image: no ink found$"):
                    digit_input(path, **options)
    dusty = Image.new("L", (400, 300), 235)
    ImageDraw.Draw(dusty).rectangle((200, 100, 201, 101), fill=30)  # a speck is not a digit
    with pytest.raises(ImageError, match="blank image"):
        preprocess(gray(dusty))


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("1", "png"), ("L", "png"), ("RGB", "png"), ("RGB", "bmp"), ("P", "gif"), ("CMYK", "tif"), ("LA", "png")],
)
def test_every_mode_gives_the_same_digit(tmp_path: Path, mode: str, suffix: str) -> None:
    reference = preprocess(gray(black_on_white()))
    out = digit_input(save(black_on_white().convert(mode), tmp_path / f"d.{suffix}"))
    assert np.array_equal(out, reference)


def test_load_image_gives_an_8_bit_gray_array(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 30), (250, 250, 250))
    ImageDraw.Draw(img).rectangle((10, 5, 20, 25), fill=(0, 0, 255))
    a = load_image(save(img, tmp_path / "rgb.png"))
    assert a.shape == (30, 40) and a.dtype == np.uint8  # rows × columns
    assert a[0, 0] == 250 and a[10, 15] == 29  # Pillow's luminance of pure blue


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    img = Image.new("I;16", (60, 60), 20000)  # mid-gray paper; clipping to 8 bits would make it all white
    ImageDraw.Draw(img).rectangle((25, 10, 35, 50), fill=60000)
    ImageDraw.Draw(img).point((0, 0), fill=65535)
    path = save(img, tmp_path / "deep.png")
    a = load_image(path)
    assert a.dtype == np.uint8
    assert a[5, 5] in (77, 78) and a[30, 30] in (233, 234)
    assert a[0, 0] == 255
    out = digit_input(path)
    assert border(out).max() == 0 and ink_bbox(out, level=20)[0] in (19, 20)


@pytest.mark.parametrize(
    ("values", "expected"),
    [((0.0, 1.0), (0, 255)), ((0, 200), (0, 200)), ((-500.0, 1500.0), (0, 255))],
    ids=["float fractions", "8-bit values", "any range, stretched"],
)
def test_32_bit_images_are_read_by_their_values(tmp_path: Path, values: tuple, expected: tuple) -> None:
    mode = "F" if isinstance(values[0], float) else "I"
    img = Image.new(mode, (40, 40), values[0])
    ImageDraw.Draw(img).rectangle((15, 5, 25, 35), fill=values[1])
    a = load_image(save(img, tmp_path / "deep.tif"))
    assert (a[0, 0], a[20, 20]) == expected


def test_rgba_transparent_background_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (120, 120), (0, 0, 0, 0))  # transparent *black*: read as black, there is no digit
    img.putalpha(digit_mask())
    path = save(img, tmp_path / "alpha.png")
    assert load_image(path)[0, 0] == 255
    assert np.array_equal(digit_input(path), preprocess(gray(black_on_white())))


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (120, 120), 0)
    img.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # both entries black; entry 0 is transparent
    img.paste(1, mask=digit_mask())
    path = save(img, tmp_path / "pal.png", transparency=0)
    assert np.array_equal(digit_input(path), preprocess(gray(black_on_white())))


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    tall = Image.new("L", (80, 80), 255)
    ImageDraw.Draw(tall).rectangle((36, 10, 44, 70), fill=0)
    wide = Image.new("L", (80, 80), 255)
    ImageDraw.Draw(wide).rectangle((10, 36, 70, 44), fill=0)
    path = tmp_path / "anim.gif"
    tall.save(path, save_all=True, append_images=[wide, wide], duration=100, loop=0)
    height, width = ink_bbox(digit_input(path), level=20)
    assert height > 2 * width


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (120, 60), "white")  # a horizontal bar, stored sideways
    ImageDraw.Draw(stored).rectangle((10, 25, 110, 35), fill="black")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = save(stored, tmp_path / "phone.jpg", exif=exif, quality=95)
    assert load_image(path).shape == (120, 60)
    height, width = ink_bbox(digit_input(path), level=40)
    assert height > 3 * width


def test_png_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("L", (120, 60), 255)
    ImageDraw.Draw(stored).rectangle((10, 25, 110, 35), fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    assert load_image(save(stored, tmp_path / "turned.png", exif=exif)).shape == (120, 60)


def test_a_big_file_is_read_as_well_as_a_small_one(tmp_path: Path) -> None:
    page = black_on_white((1200, 1000), box=(400, 200, 800, 800))
    noisy = Image.blend(page, Image.effect_noise(page.size, 40).convert("L"), 0.05)  # > 1 MiB as a PNG
    path = save(noisy, tmp_path / "big.png", compress_level=0)
    assert Path(path).stat().st_size > 1 << 20
    assert np.array_equal(load_image(path), np.array(noisy))


# --------------------------------------------------------------------------------------------- bad files


def _reason(path: Path | str) -> str:
    with pytest.raises(ImageError) as info:
        digit_input(path)
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
    assert _reason(tmp_path / "page.png") == "not an image file (it is an HTML page)"
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


@pytest.mark.parametrize(
    "head",
    [b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", b"\x00\x00\x00\x1cftypavif", bytes(range(256)), bytes(600)],
    ids=["HEIC", "AVIF", "binary", "zeros"],
)
def test_binary_files_pillow_cannot_read_are_not_called_text(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "photo.heic"
    path.write_bytes(head + bytes(64))
    assert _reason(path) == "not an image file (or a format Pillow cannot read)"


def test_text_is_called_text_even_cut_in_the_middle_of_a_character(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(("é" * 400).encode())  # 800 bytes: the first 512 end inside nothing, 511 inside "é"
    assert _reason(path) == "not an image file (it is text)"
    path.write_bytes(b"x" + ("é" * 400).encode())
    assert _reason(path) == "not an image file (it is text)"


def test_files_that_are_not_regular_files_are_refused_without_waiting(tmp_path: Path) -> None:
    """A FIFO (opening one waits for a writer), a device, a socket: "not a regular file", at once."""
    import os
    import socket
    import threading

    os.mkfifo(tmp_path / "fifo.png")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock.png"))
    reasons: dict[str, str] = {}

    def read_all() -> None:
        for path in (tmp_path / "fifo.png", "/dev/zero", tmp_path / "sock.png"):
            with pytest.raises(ImageError) as info:
                load_image(path)
            reasons[str(path)] = str(info.value)

    reader = threading.Thread(target=read_all, daemon=True)  # a hang must fail the test, not stop the run
    reader.start()
    reader.join(timeout=60)
    server.close()
    assert not reader.is_alive(), "load_image hung"
    assert set(reasons.values()) == {"not a regular file"}, reasons


def test_decompression_bombs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(png_header_only(20000, 20000))  # past Pillow's hard limit
    assert _reason(tmp_path / "bomb.png").startswith("image too large (20000x20000 pixels; limit")
    # Between Pillow's limit and twice it, Pillow only warns: that warning must stop us too.
    (tmp_path / "big.png").write_bytes(png_header_only(10000, 10000))
    assert _reason(tmp_path / "big.png").startswith("image too large (10000x10000 pixels")


def test_a_jpeg_over_the_pixel_limit_is_decoded_reduced(tmp_path: Path) -> None:
    """A phone's 100-megapixel photo is read, decoded at half size (draft mode); a PNG that big is refused."""
    w, h = 11000, 9000  # 99 Mpx: over Pillow's 89.5 Mpx limit, under twice it
    img = Image.new("L", (w // 10, h // 10), 235)
    ImageDraw.Draw(img).ellipse((400, 300, 700, 700), outline=30, width=40)
    img.resize((w, h), Image.Resampling.NEAREST).save(tmp_path / "photo.jpg", quality=80)
    loaded = load_image(tmp_path / "photo.jpg")
    assert loaded.shape == (h // 2, w // 2)
    assert loaded[h // 4, w // 4] > 200 and loaded[2500, 2100] < 80  # paper, and the ring (drawn at 500, 420)
    (tmp_path / "photo.png").write_bytes(png_header_only(w, h))
    assert _reason(tmp_path / "photo.png") == f"image too large ({w}x{h} pixels; limit 89 Mpx)"


def test_a_bomb_inside_an_icon_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """An ICO says 256×256 in its header and holds a PNG of 10000×10000: Pillow's check on the inner image must
    stop it (over the limit, under twice it), not a decode of 100 Mpx."""
    png = png_header_only(10000, 10000)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)  # 0, 0: 256×256
    (tmp_path / "bomb.ico").write_bytes(struct.pack("<HHH", 0, 1, 1) + entry + png)
    assert _reason(tmp_path / "bomb.ico").startswith("image too large")


def test_a_real_compressed_bomb_is_refused_cheaply(tmp_path: Path) -> None:
    path = tmp_path / "real-bomb.png"
    Image.new("1", (20000, 20000)).save(path)  # a few KB on disk, 400 Mpx decoded
    assert path.stat().st_size < 200_000
    assert _reason(path).startswith("image too large (20000x20000 pixels")


def test_loading_leaves_the_warning_filters_as_they_were(tmp_path: Path) -> None:
    import warnings

    before = list(warnings.filters)
    (tmp_path / "big.png").write_bytes(png_header_only(10000, 10000))
    _reason(tmp_path / "big.png")
    digit_input(save(black_on_white(), tmp_path / "ok.png"))
    assert list(warnings.filters) == before


# --------------------------------------------------------------------------------------------- stroke width


def ring(side: int, width: int) -> Image.Image:
    """A white ring ("0") of the given stroke width on black, filling a side×side image."""
    img = Image.new("L", (side, side), 0)
    ImageDraw.Draw(img).ellipse((0, 0, side - 1, side - 1), outline=255, width=width)
    return img


def stroke_width(img: np.ndarray) -> float:
    """Mean stroke width in pixels, measured independently of mnistctl's own estimate: ink area (over half the
    peak) over half its boundary (pixels a 3×3 erosion removes, 4/π px deep on average at a random angle)."""
    from scipy import ndimage

    binary = np.pad(img >= max(1, (int(img.max()) + 1) // 2), 1)
    area = int(binary.sum())
    inner = int(ndimage.binary_erosion(binary, np.ones((3, 3), bool)).sum())
    return 2 * area / max(1, area - inner) * 4 / np.pi


@pytest.mark.parametrize("width", [3, 6, 12])
def test_the_stroke_width_measure_works(width: int) -> None:
    assert stroke_width(np.array(ring(160, width))) == pytest.approx(width, rel=0.2)


def _page_with_ring(stroke: int) -> np.ndarray:
    page = Image.new("L", (400, 400), 255)
    page.paste(0, (100, 60), ring(240, stroke))  # black ink on white: inverted, cropped, fitted to 20 px
    return gray(page)


def test_thin_and_thick_strokes_come_out_mnist_wide() -> None:
    """A hairline digit and a marker digit, drawn big: both reach the network with MNIST's stroke width (its
    5th-95th percentile: 1.7-3.9 px of the 20 px box)."""

    def width_seen(stroke: int) -> float:
        seen = Image.fromarray(preprocess(_page_with_ring(stroke)))
        return stroke_width(np.array(seen.resize((112, 112), Image.BILINEAR))) / 4

    thin, thick = width_seen(3), width_seen(60)  # 0.25 and 5 px of the 20 px box before the change
    assert 1.4 <= thin <= 4.1
    assert 1.4 <= thick <= 4.1
    assert width_seen(24) == pytest.approx(2.0, abs=0.6)  # MNIST-like already: left alone


def test_stroke_normalisation_can_be_turned_off() -> None:
    page = _page_with_ring(3)
    with_fix = preprocess(page)
    as_drawn = preprocess(page, normalise_strokes=False)
    assert np.count_nonzero(as_drawn > 127) < np.count_nonzero(with_fix > 127)  # the hairline stays thin
