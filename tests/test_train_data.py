"""Training data: image folders and shards, seeded crops, resumable order, checkpoints, logs."""

import io
import tarfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from asuka.data.images import CropBox, ImageFolderDataset, ShardImageDataset, StoredCrops, list_images
from asuka.errors import CheckpointError, InputError
from asuka.training.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint, write_checkpoint
from asuka.training.data import AddMask, RectangleMasks, ResumableSampler, make_loader
from asuka.training.logs import MetricsLog, read_metrics


def _image(rng, h, w):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "a" / "b").mkdir(parents=True)
    sizes = [(40, 70), (90, 33), (20, 25), (64, 64), (50, 120)]  # one smaller than the crop
    names = ["x.png", "a/y.jpg", "a/b/z.png", "a/w.webp", "v.png"]
    for (h, w), name in zip(sizes, names):
        _image(rng, h, w).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def test_list_images_recursive_sorted(folder):
    assert list_images(folder) == ["a/b/z.png", "a/w.webp", "a/y.jpg", "v.png", "x.png"]
    (folder.parent / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        list_images(folder.parent / "empty")
    with pytest.raises(InputError, match="image folder not found"):
        list_images(folder.parent / "missing")


@pytest.mark.parametrize("resize", ["shorter", "none"])
def test_crops_any_size_seeded(folder, resize):
    ds = ImageFolderDataset(folder, 32, seed=3, resize=resize)
    for key in range(len(ds)):
        s = ds[(key, 0)]
        assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
        assert -1.0 <= s["image"].min() and s["image"].max() <= 1.0
        assert torch.equal(s["image"], ds[(key, 0)]["image"])  # same key, same crop
        box = CropBox.from_sequence(s["crop"])
        assert min(box.resized_w, box.resized_h) >= 32
        # the stored box reproduces the crop exactly
        assert torch.equal(ds.crop.apply(ds.load(key)[0], box), s["image"])
    crops = {tuple(ds[(4, e)]["crop"].tolist()) for e in range(8)}
    assert len(crops) > 1  # a new epoch draws a new crop
    other = ImageFolderDataset(folder, 32, seed=4, resize=resize)
    assert any(not torch.equal(ds[(i, 0)]["image"], other[(i, 0)]["image"]) for i in range(len(ds)))


def test_unreadable_image_is_skipped_with_warning(folder):
    (folder / "broken.png").write_bytes(b"not a png")
    ds = ImageFolderDataset(folder, 16)
    i = ds.files.index("broken.png")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        sample = ds[(i, 0)]
    assert sample["id"] == ds.files[(i + 1) % len(ds)]


def test_sampler_resume_and_ranks():
    full = ResumableSampler(7, seed=1)
    it = iter(full)
    stream = [next(it) for _ in range(20)]
    assert sorted(i for i, e in stream[:7]) == list(range(7)) and {e for _, e in stream[:7]} == {0}
    resumed = iter(ResumableSampler(7, seed=1, start=9))
    assert [next(resumed) for _ in range(11)] == stream[9:]
    r0, r1 = iter(ResumableSampler(7, seed=1, rank=0, world_size=2)), iter(ResumableSampler(7, seed=1, rank=1, world_size=2))
    first = [next(r0)[0] for _ in range(4)] + [next(r1)[0] for _ in range(3)]
    assert sorted(first) == list(range(7))  # the ranks share epoch 0 without overlap


def test_loader_resume_is_independent_of_workers(folder):
    ds = ImageFolderDataset(folder, 16, seed=0, transform=AddMask("rect"))
    kw = dict(batch_size=2, seed=0, rank=0, world_size=1)
    ref = make_loader(ds, num_workers=0, start_batches=0, **kw)
    batches = [b for _, b in zip(range(6), ref)]
    later = make_loader(ds, num_workers=2, start_batches=3, **kw)
    for want, got in zip(batches[3:], later):
        assert want["id"] == got["id"]
        assert torch.equal(want["image"], got["image"]) and torch.equal(want["mask"], got["mask"])


def _write_shards(tmp_path, n_shards=3, per_shard=4):
    rng = np.random.default_rng(1)
    urls = []
    for s in range(n_shards):
        path = tmp_path / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for k in range(per_shard):
                buf = io.BytesIO()
                _image(rng, 30 + 5 * k, 48).save(buf, format="PNG")
                for name, data in ((f"s{s}_{k}.png", buf.getvalue()), (f"s{s}_{k}.txt", b"caption")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        urls.append(path)
    return tmp_path / "shard-{000..002}.tar"


def test_shards_stream_and_exact_skip(tmp_path):
    pattern = _write_shards(tmp_path)
    ds = ShardImageDataset(str(pattern), 24, batch_size=2, seed=5)
    ref = make_loader(ds, batch_size=2, num_workers=0, seed=5, rank=0, world_size=1, start_batches=0)
    batches = [b for _, b in zip(range(9), ref)]  # 18 samples: more than one epoch of 12
    ids = [i for b in batches for i in b["id"]]
    assert sorted(ids[:12]) == sorted(f"s{s}_{k}" for s in range(3) for k in range(4))
    ds2 = ShardImageDataset(str(pattern), 24, batch_size=2, seed=5)
    later = make_loader(ds2, batch_size=2, num_workers=0, seed=5, rank=0, world_size=1, start_batches=5)
    for want, got in zip(batches[5:], later):
        assert want["id"] == got["id"] and torch.equal(want["image"], got["image"])
    with pytest.raises(InputError, match="webdataset shards not found"):
        ShardImageDataset(str(tmp_path / "missing-{0..1}.tar"), 24, batch_size=2)


def test_add_mask_paper_mixture_and_rect(folder):
    rng = np.random.default_rng(0)
    sample = {"image": torch.zeros(3, 32, 32)}
    for kind in ("paper_train", "rect"):
        out = AddMask(kind, min_ratio=0.2, max_ratio=0.3)(dict(sample), rng)
        m = out["mask"]
        assert m.shape == (1, 32, 32) and m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0}
        assert 0 < m.mean() < 1
    ratios = [RectangleMasks(0.2, 0.3).sample(64, 64, np.random.default_rng(i)).mean() for i in range(20)]
    assert 0.17 < min(ratios) and max(ratios) < 0.33


def test_stored_crops_replay_with_probability():
    box = CropBox(40, 32, 3, 0, True)
    always, never = StoredCrops({"a": box}, p=1.0), StoredCrops({"a": box}, p=0.0)
    rng = np.random.default_rng(0)
    assert always("a", rng) == box and always("b", rng) is None and never("a", rng) is None
    half = StoredCrops({"a": box}, p=0.5)
    hits = sum(half("a", np.random.default_rng(i)) is not None for i in range(400))
    assert 150 < hits < 250


def test_checkpoints_atomic_latest_and_pruned(tmp_path):
    for step in (5, 10, 15):
        write_checkpoint(tmp_path, step, {"step": step, "w": torch.full((3,), float(step))}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 15]
    # a temporary folder left by a killed writer is never taken for a checkpoint
    (tmp_path / "checkpoints" / ".tmp-step_00000020-1").mkdir()
    (tmp_path / "checkpoints" / "step_00000025").mkdir()  # no state file: incomplete
    assert latest_checkpoint(tmp_path).name == "step_00000015"
    assert torch.equal(read_checkpoint(latest_checkpoint(tmp_path))["w"], torch.full((3,), 15.0))
    write_checkpoint(tmp_path, 15, {"step": 15, "w": torch.zeros(3)}, keep=2)  # same step again
    assert torch.equal(read_checkpoint(latest_checkpoint(tmp_path))["w"], torch.zeros(3))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "bad.pt")


def test_metrics_log_truncates_on_resume(tmp_path):
    log = MetricsLog(tmp_path, resume_step=0, tensorboard=False)
    for step in range(1, 6):
        log.log(step, {"loss": 1.0 / step} if step < 4 else {"loss": 1.0 / step, "g_loss": 0.5})
    log.close()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[4]["g_loss"] == 0.5 and "g_loss" not in rows[0]
    assert rows[2]["loss"] == 1.0 / 3  # exact floats
    MetricsLog(tmp_path, resume_step=3, tensorboard=False).close()  # resumed from the step-3 checkpoint
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MetricsLog(tmp_path, resume_step=0, tensorboard=False).close()  # a fresh run starts a new file
    assert read_metrics(tmp_path) == []
