"""The streaming InpaintingEvaluator and its report."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from asuka.errors import InputError
from asuka.metrics import (
    FeatureExtractor,
    InpaintingEvaluator,
    fid_from_features,
    inception_discriminative_scores,
    load_lpips,
    lpips_distance,
    psnr,
)


class TinyExtractor(FeatureExtractor):
    """A random 6-d feature network (stands in for Inception)."""

    name = "tiny"
    feature_dim = 6

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=g))

    @torch.no_grad()
    def forward(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3))


@pytest.fixture
def data(generator):
    n = 20
    base = torch.rand(n, 3, 4, 4, generator=generator) * 2 - 1
    gt = torch.nn.functional.interpolate(base, size=(40, 40), mode="bilinear", align_corners=False)
    pred = (0.3 * gt + 0.7 * torch.randn(gt.shape, generator=generator)).clamp(-1, 1)
    mask = torch.zeros(n, 1, 40, 40)
    for i in range(n):
        mask[i, :, 6 + i % 5:26 + i % 7, 8:30] = 1
    return pred, gt, mask


def _run(pred, gt, mask, batch, **kwargs):
    ev = InpaintingEvaluator(**kwargs)
    groups = ["a" if i < 12 else "b" for i in range(len(pred))]
    for s in range(0, len(pred), batch):
        ev.update(pred[s:s + batch], gt[s:s + batch], mask[s:s + batch], groups=groups[s:s + batch],
                  names=[f"im{i}" for i in range(s, min(s + batch, len(pred)))])
    return ev


def test_streaming_equals_one_shot_and_direct_computation(data):
    pred, gt, mask = data
    torch.manual_seed(0)
    lp = load_lpips(random_backbone=True)
    kwargs = dict(feature_extractor=TinyExtractor(), lpips_model=lp)
    one = _run(pred, gt, mask, batch=len(pred), **kwargs).compute()
    streamed = _run(pred, gt, mask, batch=3, **kwargs).compute()
    for key in ("fid", "u_ids", "p_ids", "lpips", "psnr", "ssim", "boundary_grad", "color_shift"):
        assert streamed.overall[key] == pytest.approx(one.overall[key], rel=1e-4, abs=1e-6), key
    assert streamed.overall["n"] == 20

    # the same numbers computed directly from the metric functions
    ext = TinyExtractor()
    comp = torch.where(mask >= 0.5, pred, gt)
    real, fake = ext(gt).numpy(), ext(comp).numpy()
    assert one.overall["fid"] > 0.01
    assert one.overall["fid"] == pytest.approx(fid_from_features(real, fake), rel=1e-4)
    u, p = inception_discriminative_scores(real, fake)
    assert (one.overall["u_ids"], one.overall["p_ids"]) == (pytest.approx(u), pytest.approx(p))
    assert one.overall["psnr"] == pytest.approx(psnr(pred, gt, mask).mean().item())
    assert one.overall["lpips"] == pytest.approx(lpips_distance(lp, pred, gt, mask).mean().item(), rel=1e-5)
    # groups: their own subsets
    assert one.groups["a"]["n"] == 12 and one.groups["b"]["n"] == 8
    assert one.groups["b"]["psnr"] == pytest.approx(psnr(pred[12:], gt[12:], mask[12:]).mean().item())
    assert one.groups["a"]["fid"] == pytest.approx(fid_from_features(real[:12], fake[:12]), rel=1e-4)


def test_evaluator_keeps_features_not_images(data):
    pred, gt, mask = data
    ev = _run(pred, gt, mask, batch=4, feature_extractor=TinyExtractor())
    stored = sum(a.nbytes for a in ev._real + ev._fake)
    assert stored == 20 * 2 * 6 * 4  # two float32 feature vectors per image, nothing else
    assert not any(isinstance(v, torch.Tensor) for row in ev._rows for v in row.values())


def test_ids_skipped_with_fewer_samples_than_dimensions(data):
    pred, gt, mask = data
    ev = InpaintingEvaluator(feature_extractor=TinyExtractor())
    ev.update(pred[:6], gt[:6], mask[:6], groups=["x", "x", "x", "y", "y", "y"])
    ev.update(pred[6:7], gt[6:7], mask[6:7], groups=["y"])
    report = ev.compute()
    assert report.overall["u_ids"] is not None       # 14 samples > 6 dims
    assert report.groups["y"]["u_ids"] is not None   # 8 samples > 6 dims
    assert report.groups["x"]["u_ids"] is None       # 6 samples: any two sets separate
    assert report.groups["x"]["fid"] is not None
    assert any("x: IDS not computed: 6 samples for 6 SVM dimensions" in n for n in report.notes)
    assert any("x: FID from 3 images of 6-d features" in n for n in report.notes)
    assert not any(n.startswith("all: FID") for n in report.notes)  # 7 images > 6 dims


def test_without_networks_only_pixel_metrics(data):
    pred, gt, mask = data
    report = _run(pred, gt, mask, batch=8).compute()
    assert "fid" not in report.overall and "lpips" not in report.overall
    assert report.overall["psnr"] > 5
    with pytest.raises(InputError, match="no images"):
        InpaintingEvaluator().compute()
    with pytest.raises(InputError, match="2 images but 1 names"):
        InpaintingEvaluator().update(pred[:2], gt[:2], mask[:2], names=["a"])


def test_report_writes_json_csv_markdown(data, tmp_path):
    pred, gt, mask = data
    mask = mask.clone()
    mask[0] = 0  # no hole: colour shift undefined for this image
    report = _run(pred, gt, mask, batch=5, feature_extractor=TinyExtractor()).compute()
    paths = report.write(tmp_path / "out")
    js = json.loads(paths["json"].read_text())
    assert js["overall"]["n"] == 20 and set(js["groups"]) == {"a", "b"}
    assert js["per_image"][0]["color_shift"] is None  # NaN written as null
    assert math.isfinite(js["overall"]["color_shift"])
    assert any("color shift undefined for 1 image" in n for n in js["notes"])
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 20 and rows[3]["name"] == "im3" and float(rows[3]["psnr"]) > 0
    md = paths["markdown"].read_text()
    assert "| all | 20 |" in md and "FID" in md
    table = report.format_table()
    assert table.splitlines()[0].split()[:3] == ["subset", "n", "FID"]
    assert np.isclose(float(table.splitlines()[2].split()[2]), round(report.overall["fid"], 2))
