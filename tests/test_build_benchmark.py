"""build_benchmark / asuka build-benchmark on generated images with a tiny random embedder."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from asuka.cli import main
from asuka.data import MisatoDataset, build_benchmark
from asuka.data.build import center_square, load_embeddings, make_embedder, select_representatives
from asuka.errors import InputError
from asuka.masks import rle_encode


def _make_images(folder, n=18, seed=0):
    """Three visual groups (red-ish, green stripes, blue noise), varied non-square sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
        img[..., i % 3] += np.uint8(150)
        if i % 3 == 1:
            img[::4] = 255
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"img{i:02d}.png")


class TinyEmbedder:
    """A random conv net on 32 px inputs: a stand-in for CLIP in tests."""

    def __init__(self):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        self.calls = 0

    @torch.no_grad()
    def __call__(self, images):
        self.calls += 1
        x = torch.stack([torch.from_numpy(np.asarray(im.resize((32, 32)), np.float32)).permute(2, 0, 1) / 127.5 - 1
                         for im in images])
        return self.net(x)


@pytest.fixture
def source(tmp_path):
    _make_images(tmp_path / "src")
    return tmp_path / "src"


def test_build_benchmark_layout_and_selection(source, tmp_path):
    emb = TinyEmbedder()
    out = tmp_path / "bench"
    manifest = build_benchmark(source, out, clusters=4, size=48, seed=3, embed_fn=emb, batch_size=5)
    assert emb.calls == 4  # 18 images in batches of 5
    base = out / "48"
    assert sorted(p.name for p in (base / "image").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    assert sorted(p.name for p in (base / "mask").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    assert json.loads((base / "manifest.json").read_text()) == manifest
    entries = manifest["entries"]
    assert sorted(e["cluster"] for e in entries) == [0, 1, 2, 3]
    assert sum(e["cluster_size"] for e in entries) == 18

    # the chosen image of each cluster is the member nearest its centre
    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.png"))
    feats = np.concatenate([emb([Image.open(source / n).convert("RGB") for n in names])])
    from sklearn.cluster import BisectingKMeans

    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    km = BisectingKMeans(n_clusters=4, random_state=3).fit(x)
    for e in entries:
        members = np.flatnonzero(km.labels_ == e["cluster"])
        best = members[np.argmin(np.linalg.norm(x[members] - km.cluster_centers_[e["cluster"]], axis=1))]
        assert names[best] == e["source"]

    for e in entries:
        img = np.asarray(Image.open(base / "image" / f"{e['name']}.png"))
        ref = np.asarray(center_square(Image.open(source / e["source"]).convert("RGB"), 48))
        assert img.shape == (48, 48, 3) and np.array_equal(img, ref)
        mask = np.asarray(Image.open(base / "mask" / f"{e['name']}.png"))
        assert set(np.unique(mask)) <= {0, 255}
        assert abs((mask == 255).mean() - e["ratio"]) < 1e-6 and 0.2 <= e["ratio"] <= 0.8
        assert not e["generator"].startswith("rectangle")

    ds = MisatoDataset(out, 48, strict=False)
    assert len(ds) == 4 and ds[0]["image"].shape == (3, 48, 48)


def test_build_is_deterministic_and_embeddings_file_matches(source, tmp_path):
    emb = TinyEmbedder()
    a = build_benchmark(source, tmp_path / "a", clusters=3, size=32, seed=1, embed_fn=emb)
    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.png"))
    feats = emb([Image.open(source / n).convert("RGB") for n in names]).numpy()
    np.savez(tmp_path / "e.npz", embeddings=feats[::-1], names=np.array([n.split("/")[-1] for n in names][::-1]))
    np.save(tmp_path / "e.npy", feats)
    b = build_benchmark(source, tmp_path / "b", clusters=3, size=32, seed=1, embeddings=tmp_path / "e.npz")
    c = build_benchmark(source, tmp_path / "c", clusters=3, size=32, seed=1, embeddings=tmp_path / "e.npy")
    for m in (b, c):
        assert [(e["source"], e["ratio"]) for e in m["entries"]] == [(e["source"], e["ratio"]) for e in a["entries"]]
    for name in ("image/0000.png", "mask/0002.png"):
        assert (tmp_path / "a" / "32" / name).read_bytes() == (tmp_path / "b" / "32" / name).read_bytes()
    with pytest.raises(InputError, match="no embedding for"):
        load_embeddings(tmp_path / "e.npz", names + ["extra.png"])


def test_build_refuses_overwrite_and_merges_domains(source, tmp_path):
    emb = TinyEmbedder()
    out = tmp_path / "bench"
    build_benchmark(source, out, clusters=2, size=32, embed_fn=emb)
    with pytest.raises(InputError, match="already exist"):
        build_benchmark(source, out, clusters=2, size=32, embed_fn=emb)
    m = build_benchmark(source, out, clusters=3, size=32, embed_fn=emb, start_index=500)
    assert [e["name"] for e in m["entries"]] == ["0000", "0001", "0500", "0501", "0502"]
    assert len(m["builds"]) == 2
    assert MisatoDataset(out, 32, strict=False)[2]["domain"] == "indoor"
    build_benchmark(source, out, clusters=2, size=32, embed_fn=emb, seed=9, overwrite=True)
    with pytest.raises(InputError, match="between 1 and the number of images"):
        build_benchmark(source, out / "x", clusters=19, size=32, embed_fn=emb)


def test_1024_layout_uses_mask_prefix(source, tmp_path):
    emb = TinyEmbedder()
    build_benchmark(source, tmp_path / "o", clusters=1, size=1024, embed_fn=emb)
    assert (tmp_path / "o" / "1024" / "mask" / "000000.png").exists()
    assert len(MisatoDataset(tmp_path / "o", 1024, strict=False)) == 1


def test_coco_foreground_removed_from_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(src / f"{i}.jpg")
        obj = np.zeros((60, 80), np.uint8)
        obj[10:50, 20 + 5 * i:60] = 1  # a large central object
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 60, "width": 80})
        annotations.append({"id": 10 + i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "segmentation": rle_encode(obj)})
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations}))
    m = build_benchmark(src, tmp_path / "o", clusters=4, size=60, seed=0, embed_fn=TinyEmbedder(),
                        coco_annotations=coco, object_dilation=0)
    for e in m["entries"]:
        i = int(e["source"].split(".")[0])
        obj = np.zeros((60, 80), np.uint8)
        obj[10:50, 20 + 5 * i:60] = 1
        obj_sq = obj[:, 10:70]  # the centre crop of 80 -> 60 columns
        mask = np.asarray(Image.open(tmp_path / "o" / "60" / "mask" / f"{e['name']}.png")) == 255
        assert not (mask & (obj_sq == 1)).any(), "objects must be cut out of the hole"
        assert e["foreground"] == pytest.approx(obj_sq.mean(), abs=1e-6)
        assert e["ratio"] <= e["ratio_before_removal"]
        assert e["ratio"] >= 0.2 or e["below_ratio_range"]


def test_cli_build_with_embeddings_and_errors(source, tmp_path, capsys):
    names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.png"))
    np.save(tmp_path / "e.npy", np.random.default_rng(0).normal(size=(len(names), 6)))
    out = tmp_path / "o"
    args = ["build-benchmark", "--images", str(source), "-o", str(out), "--clusters", "3", "--size", "32",
            "--embeddings", str(tmp_path / "e.npy")]
    assert main(args) == 0
    assert "wrote 3 image/mask pairs" in capsys.readouterr().out
    assert main(args) == 2
    assert "already exist" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((3, 6)))
    assert main(args[:-1] + [str(tmp_path / "bad.npy"), "--overwrite"]) == 2
    assert "3 embeddings for 18 images" in capsys.readouterr().err
    assert main(["build-benchmark", "--images", str(tmp_path / "none"), "-o", str(out)]) == 2
    assert "image folder not found" in capsys.readouterr().err



def test_run_benchmark_parser():
    from asuka.cli import build_parser
    from asuka.cli.benchmark import run_run

    args = build_parser().parse_args(["run-benchmark", "--model", "m", "--data", "d", "-o", "o", "--steps", "4",
                                      "--seed", "1", "--device", "cpu", "--dtype", "float16", "--overwrite"])
    assert args.func is run_run and (args.steps, args.seed, args.dtype, args.overwrite) == (4, 1, "float16", True)


def test_select_representatives_single_cluster():
    x = np.random.default_rng(0).normal(size=(5, 3))
    (only,) = select_representatives(x, 1, 0)
    assert only["cluster_size"] == 5 and only["cluster"] == 0


def test_embedder_specs(tmp_path):
    with pytest.raises(InputError, match="embedder must be"):
        make_embedder("clip")
    with pytest.raises(InputError, match="cannot load transformers CLIP model"):
        make_embedder(f"transformers:{tmp_path / 'missing'}")


def test_transformers_embedder_loads_a_local_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                                    ).save_pretrained(tmp_path / "clip")
    embed = make_embedder(f"transformers:{tmp_path / 'clip'}")
    imgs = [Image.fromarray(np.full((40, 50, 3), v, np.uint8)) for v in (0, 128, 255)]
    feats = embed(imgs)
    assert feats.shape == (3, 16) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[2])


def test_open_clip_embedder_loads_a_local_checkpoint(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                           "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "asuka-tiny-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "asuka-tiny-test.json")
    torch.manual_seed(0)
    model = open_clip.create_model("asuka-tiny-test")
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    embed = make_embedder(f"open_clip:asuka-tiny-test/{tmp_path / 'tiny.pt'}")
    feats = embed([Image.fromarray(np.full((40, 50, 3), v, np.uint8)) for v in (0, 255)])
    assert feats.shape == (2, 16) and not np.allclose(feats[0], feats[1])
    with pytest.raises(InputError, match="cannot load open_clip model"):
        make_embedder(f"open_clip:asuka-tiny-test/{tmp_path / 'missing.pt'}")
