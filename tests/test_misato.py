"""MisatoDataset / PairedFolderDataset on small layouts the tests write."""

import numpy as np
import pytest
import torch
from PIL import Image

from asuka.data import MisatoDataset, PairedFolderDataset, domain_of
from asuka.errors import InputError


def _write_pair(image_dir, mask_dir, name, mask_name=None, size=(16, 12), seed=0):
    rng = np.random.default_rng(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[2:6, 3:9] = 255
    Image.fromarray(img).save(image_dir / f"{name}.png")
    Image.fromarray(mask).save(mask_dir / f"{mask_name or name}.png")
    return img, mask


def _misato(root, resolution, count, size=(16, 12)):
    """A complete layout: one real pair, hard-linked under every name (fast)."""
    import os

    prefix = "00" if resolution == 1024 else ""
    base = root / str(resolution)
    _write_pair(base / "image", base / "mask", "0000", f"{prefix}0000", size=size)
    for i in range(1, count):
        os.link(base / "image" / "0000.png", base / "image" / f"{i:04d}.png")
        os.link(base / "mask" / f"{prefix}0000.png", base / "mask" / f"{prefix}{i:04d}.png")
    return base


def test_domain_of():
    assert domain_of(0) == "outdoor landscape" and domain_of(499) == "outdoor landscape"
    assert domain_of("0500") == "indoor" and domain_of("1000.png") == "building"
    assert domain_of("1999") == "background" and domain_of("000007.png") == "outdoor landscape"
    with pytest.raises(InputError, match="0..1999"):
        domain_of(2000)
    with pytest.raises(InputError, match="not a MISATO file name"):
        domain_of("cat.png")


def test_misato_512_full_layout(tmp_path):
    _misato(tmp_path, 512, 2000, size=(8, 8))
    ds = MisatoDataset(tmp_path, 512)
    assert len(ds) == 2000
    s = ds[1500]
    assert s["name"] == "1500" and s["domain"] == "background"
    assert s["image"].shape == (3, 8, 8) and s["mask"].shape == (1, 8, 8)
    assert ds[0]["domain"] == "outdoor landscape" and ds[750]["domain"] == "indoor"
    # the resolution folder itself may be given
    assert len(MisatoDataset(tmp_path / "512", 512)) == 2000


def test_misato_values_and_polarity(tmp_path):
    img, mask = _write_pair(tmp_path / "x" / "image", tmp_path / "x" / "mask", "0000", size=(16, 12))
    ds = MisatoDataset(tmp_path / "x", 512, strict=False)
    s = ds[0]
    assert s["image"].dtype == torch.float32 and s["image"].min() >= -1 and s["image"].max() <= 1
    assert torch.allclose(s["image"], torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
    assert torch.equal(s["mask"][0], torch.from_numpy(mask == 255).float())  # 255 = hole -> 1


def test_misato_1024_prefix_and_partial_layout(tmp_path):
    base = tmp_path / "1024"
    _write_pair(base / "image", base / "mask", "0000", "000000")
    with pytest.raises(InputError) as err:
        MisatoDataset(tmp_path, 1024)
    msg = str(err.value)
    assert "1499 image(s) missing" in msg and "0001.png" in msg and "000001.png" in msg
    ds = MisatoDataset(tmp_path, 1024, strict=False)
    assert len(ds) == 1 and ds.mask_paths[0].name == "000000.png"


def test_misato_missing_layout_errors(tmp_path):
    with pytest.raises(InputError, match="missing folder"):
        MisatoDataset(tmp_path, 512)
    with pytest.raises(InputError, match="resolution"):
        MisatoDataset(tmp_path, 256)
    _write_pair(tmp_path / "256" / "image", tmp_path / "256" / "mask", "0000", "0001")
    with pytest.raises(InputError, match=r"mask\(s\) missing.*0000.png"):
        MisatoDataset(tmp_path, 256, strict=False)


def test_paired_folder_dataset(tmp_path):
    imgs, masks = tmp_path / "img", tmp_path / "msk"
    _write_pair(imgs, masks, "cat")
    _write_pair(imgs, masks, "0007", "000007")  # MISATO-1024 style mask name
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(imgs / "dog.jpg")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(masks / "dog.png")
    ds = PairedFolderDataset(imgs, masks)
    assert ds.names == ["0007", "cat", "dog"]
    assert [ds[i]["domain"] for i in range(3)] == ["outdoor landscape", "unknown", "unknown"]
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 12, 16) and batch["mask"].shape == (3, 1, 12, 16)
    assert batch["name"] == ["0007", "cat", "dog"]


def test_paired_folder_mismatches(tmp_path):
    imgs, masks = tmp_path / "img", tmp_path / "msk"
    _write_pair(imgs, masks, "a")
    _write_pair(imgs, masks, "b", "c")
    with pytest.raises(InputError) as err:
        PairedFolderDataset(imgs, masks)
    assert "b.png" in str(err.value) and "c.png" in str(err.value)
    imgs2, masks2 = tmp_path / "i2", tmp_path / "m2"
    _write_pair(imgs2, masks2, "a")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(masks2 / "a.png")  # half size
    ds = PairedFolderDataset(imgs2, masks2)
    with pytest.raises(InputError, match="does not match the image size"):
        ds[0]
    assert PairedFolderDataset(imgs2, masks2, resize_masks=True)[0]["mask"].shape == (1, 12, 16)


def test_misato_1024_full_layout(tmp_path):
    _misato(tmp_path, 1024, 1500, size=(8, 8))
    ds = MisatoDataset(tmp_path, 1024)
    assert len(ds) == 1500 and ds.mask_paths[1499].name == "001499.png"
    assert ds[1499]["domain"] == "building" and ds[1499]["mask"].sum() > 0
