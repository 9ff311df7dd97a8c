"""asuka.io: reading every image mode, the mask rule, conversions, output paths."""

import os

import numpy as np
import PIL.Image
import pytest
import torch

from asuka import io
from asuka.errors import InputError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # H=12, W=16


def _save(tmp_path, name, img, **kwargs):
    path = tmp_path / name
    img.save(path, **kwargs)
    return path


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "1", "I;16", "I"])
def test_load_image_any_mode_gives_rgb_of_same_size(tmp_path, mode):
    if mode in ("I;16", "I"):
        img = PIL.Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)
        if mode == "I":
            img = img.convert("I")
    else:
        img = PIL.Image.fromarray(RGB).convert(mode)
    ext = "tif" if mode in ("CMYK", "I") else "png"
    path = _save(tmp_path, f"x.{ext}", img)
    out = io.load_image(path)
    assert out.mode == "RGB" and out.size == (16, 12)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    path = _save(tmp_path, "x16.png", PIL.Image.fromarray(values))
    out = np.asarray(io.load_image(path))[..., 0]
    assert out.tolist() == [[0, 100, 255]]


def test_rgba_image_drops_alpha_and_keeps_colour(tmp_path):
    rgba = np.concatenate([RGB, np.zeros((12, 16, 1), np.uint8)], axis=-1)
    path = _save(tmp_path, "a.png", PIL.Image.fromarray(rgba))
    assert np.array_equal(np.asarray(io.load_image(path)), RGB)


def test_exif_orientation_is_applied(tmp_path):
    img = PIL.Image.fromarray(RGB)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(tmp_path, "rot.jpg", img, exif=exif.tobytes())
    assert PIL.Image.open(path).size == (16, 12)
    assert io.load_image(path).size == (12, 16)


def test_missing_unreadable_and_directory_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        io.load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        io.load_image(bad)
    with pytest.raises(InputError, match="directory"):
        io.load_image(tmp_path)


# ------------------------------------------------------------------ masks
def test_grayscale_mask_threshold_is_half():
    arr = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    assert io.mask_from_pil(PIL.Image.fromarray(arr)).tolist() == [[0, 0, 1, 1]]


def test_rgb_mask_uses_luminance():
    arr = np.zeros((2, 2, 3), np.uint8)
    arr[0, 0] = 255
    assert io.mask_from_pil(PIL.Image.fromarray(arr)).tolist() == [[1, 0], [0, 0]]


def test_constant_colour_mask_with_alpha_uses_alpha(tmp_path):
    # A black stroke painted on a transparent layer: luminance is 0 everywhere, alpha holds the mask.
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[1:3, 1:3, 3] = 255
    rgba[0, 0, 3] = 100  # below 50%: not a hole
    path = _save(tmp_path, "m.png", PIL.Image.fromarray(rgba))
    mask = io.load_mask(path)
    expected = np.zeros((4, 4))
    expected[1:3, 1:3] = 1
    assert np.array_equal(mask, expected)


def test_varying_colour_with_alpha_uses_luminance():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 1, :3] = 255
    rgba[1, 1, 3] = 0  # alpha is ignored when the colour carries the mask
    assert io.mask_from_pil(PIL.Image.fromarray(rgba)).tolist() == [[0, 1], [0, 0]]


def test_sixteen_bit_mask_threshold():
    arr = np.array([[0, 32767, 32768, 65535]], dtype=np.uint16)
    assert io.mask_from_pil(PIL.Image.fromarray(arr)).tolist() == [[0, 0, 1, 1]]


def test_palette_and_one_bit_masks():
    arr = np.array([[0, 255]], dtype=np.uint8)
    assert io.mask_from_pil(PIL.Image.fromarray(arr).convert("P")).tolist() == [[0, 1]]
    assert io.mask_from_pil(PIL.Image.fromarray(arr).convert("1")).tolist() == [[0, 1]]


def test_fit_mask_refuses_other_size_unless_resize():
    mask = np.zeros((4, 6), np.float32)
    mask[:, 3:] = 1
    with pytest.raises(InputError, match=r"6x4 does not match the image size 12x8.*--resize-mask"):
        io.fit_mask(mask, (12, 8))
    resized = io.fit_mask(mask, (12, 8), resize=True)
    assert resized.shape == (8, 12) and set(np.unique(resized)) == {0.0, 1.0}
    assert resized[:, 6:].all() and not resized[:, :6].any()


# ------------------------------------------------------------------ tensors
def test_image_to_tensor_from_pil_numpy_torch_agree():
    t_pil = io.image_to_tensor(PIL.Image.fromarray(RGB))
    t_u8 = io.image_to_tensor(RGB)
    t_float = io.image_to_tensor(RGB.astype(np.float32) / 255)
    t_torch = io.image_to_tensor(t_pil)
    assert t_pil.shape == (3, 12, 16) and t_pil.dtype == torch.float32
    assert t_pil.min() >= -1 and t_pil.max() <= 1
    for t in (t_u8, t_float, t_torch):
        torch.testing.assert_close(t, t_pil, atol=1e-6, rtol=0)
    assert np.array_equal(io.tensor_to_uint8(t_pil)[0], RGB)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 4), np.uint8), "shape"),
    (np.full((4, 4, 3), 2.0, np.float32), r"\[0, 1\]"),
    (torch.full((3, 4, 4), 1.5), r"\[-1, 1\]"),
    (torch.zeros(4, 3, 4), "shape"),
    (torch.full((3, 2, 2), float("nan")), "NaN"),
    (np.zeros((4, 4, 3), np.int64), "uint8"),
    ("image.png", "PIL.Image"),
])
def test_bad_images_raise_input_error(bad, message):
    with pytest.raises(InputError, match=message):
        io.images_to_tensors(bad)


def test_batches_and_lists_of_different_sizes():
    batch = io.images_to_tensors(torch.zeros(3, 3, 8, 8))
    assert len(batch) == 3
    mixed = io.images_to_tensors([np.zeros((8, 8, 3), np.uint8), PIL.Image.new("RGB", (5, 7))])
    assert [t.shape for t in mixed] == [(3, 8, 8), (3, 7, 5)]
    with pytest.raises(InputError, match="empty list"):
        io.images_to_tensors([])


@pytest.mark.parametrize("mask", [
    np.array([[0, 255], [128, 10]], np.uint8),
    np.array([[0, 1], [1, 0]], np.uint8),  # a 0/1 uint8 array is read as 0/1
    np.array([[False, True], [True, False]]),
    np.array([[0.0, 0.9], [0.5, 0.49]], np.float32),
    torch.tensor([[0.0, 1.0], [0.7, 0.2]]),
    torch.tensor([[[0.0, 1.0], [0.7, 0.2]]]),
])
def test_mask_inputs_binarise_at_half(mask):
    (t,) = io.masks_to_tensors(mask)
    assert t.shape == (1, 2, 2) and t.dtype == torch.float32
    assert t[0].tolist() == [[0, 1], [1, 0]]


def test_mask_batches_and_errors():
    assert len(io.masks_to_tensors(torch.zeros(3, 1, 4, 4))) == 3
    assert len(io.masks_to_tensors(np.zeros((2, 4, 4), np.float32))) == 2
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        io.masks_to_tensors(torch.full((4, 4), 2.0))
    with pytest.raises(InputError, match="shape"):
        io.masks_to_tensors(torch.zeros(2, 3, 4, 4))


# ------------------------------------------------------------------ output paths
@pytest.mark.parametrize("ext, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".JPEG", "JPEG"), (".webp", "WEBP")])
def test_save_image_uses_extension_format(tmp_path, ext, fmt):
    path = io.save_image(PIL.Image.fromarray(RGB), tmp_path / "sub" / f"out{ext}")
    with PIL.Image.open(path) as img:
        assert img.format == fmt and img.size == (16, 12)
    assert sorted(os.listdir(tmp_path / "sub")) == [f"out{ext}"]  # no partial file left


@pytest.mark.parametrize("name", ["out.gif", "out.txt", "out"])
def test_unknown_output_extension_is_refused(tmp_path, name):
    with pytest.raises(InputError, match="unsupported output extension"):
        io.save_image(PIL.Image.fromarray(RGB), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_output_equal_to_an_input_is_refused(tmp_path):
    src = _save(tmp_path, "in.png", PIL.Image.fromarray(RGB))
    (tmp_path / "d").mkdir()
    link = tmp_path / "link.png"
    link.symlink_to(src)
    for same in (src, tmp_path / "d" / ".." / "in.png", link):
        with pytest.raises(InputError, match="same file"):
            io.check_output_path(same, [src])
    io.check_output_path(tmp_path / "other.png", [src])


def test_find_images_matches_stems_and_refuses_duplicates(tmp_path):
    for name in ("a.png", "b.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(io.find_images(tmp_path)) == ["a", "b"]
    (tmp_path / "a.webp").write_bytes(b"")
    with pytest.raises(InputError, match="stem 'a'"):
        io.find_images(tmp_path)
    with pytest.raises(InputError, match="not found"):
        io.find_images(tmp_path / "missing")
