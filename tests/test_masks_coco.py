"""COCO polygon / RLE decoding and the object-shape banks (COCO file, folder, synthetic)."""

import json

import numpy as np
import pytest
from PIL import Image

from asuka.errors import InputError
from asuka.masks import CocoAnnotations, Shape, ShapeBank, decode_segmentation, object_shape, rle_decode, rle_encode
from asuka.masks.coco import fill_polygons, polygons_to_arrays

# Reference strings produced by pycocotools.mask.encode for these masks.
_SMALL = np.zeros((6, 7), np.uint8)
_SMALL[1:4, 2:6] = 1
_SMALL[5, 0] = 1
_SMALL[0, 6] = 1
_SMALL_RLE = "5172L00000ON3"


def test_rle_matches_pycocotools_strings():
    assert rle_encode(_SMALL) == {"size": [6, 7], "counts": _SMALL_RLE}
    assert np.array_equal(rle_decode({"size": [6, 7], "counts": _SMALL_RLE}), _SMALL)
    assert np.array_equal(rle_decode({"size": [6, 7], "counts": _SMALL_RLE.encode()}), _SMALL)
    big = np.zeros((100, 120), np.uint8)
    big[10:90, 5:115] = 1
    s = rle_encode(big)["counts"]
    assert s.startswith("n?`2d0") and s.endswith("Z?")
    assert np.array_equal(rle_decode(rle_encode(big)), big)


def test_rle_round_trip_random_and_uncompressed():
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        assert np.array_equal(rle_decode(rle_encode(m)), m)
        raw = rle_encode(m, compressed=False)
        assert sum(raw["counts"]) == h * w and np.array_equal(rle_decode(raw), m)


def test_rle_errors():
    with pytest.raises(InputError, match="sum to"):
        rle_decode({"size": [4, 4], "counts": [3, 4]})
    with pytest.raises(InputError, match="'size'"):
        rle_decode({"counts": [16]})
    with pytest.raises(InputError, match="does not match the image size"):
        decode_segmentation(rle_encode(_SMALL), 7, 6)


def test_polygon_pixel_convention_and_area():
    sq = decode_segmentation([[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]], 6, 7)
    expected = np.zeros((6, 7), np.uint8)
    expected[1:4, 2:6] = 1  # COCO: corners at pixel boundaries, as pycocotools decodes it
    assert np.array_equal(sq, expected)
    tri = fill_polygons(polygons_to_arrays([[10, 10, 190, 20, 60, 170]]), 200, 200)
    area = 0.5 * abs((190 - 10) * (170 - 10) - (60 - 10) * (20 - 10))
    assert abs(tri.sum() - area) / area < 0.01
    two = decode_segmentation([[0, 0, 3, 0, 3, 3, 0, 3], [5, 5, 7, 5, 7, 7, 5, 7]], 8, 8)
    assert two.sum() == 9 + 4
    with pytest.raises(InputError, match="even number"):
        decode_segmentation([[1, 2, 3, 4, 5]], 8, 8)


def test_against_pycocotools_if_installed():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = (rng.random((30, 41)) < 0.4).astype(np.uint8)
        ref = mask_api.encode(np.asfortranarray(m))
        assert rle_encode(m)["counts"] == ref["counts"].decode()
        # a star-shaped polygon (angles sorted, so it does not cross itself)
        ang = np.sort(rng.uniform(0, 2 * np.pi, 7))
        rad = rng.uniform(5, 14, 7)
        pts = np.stack([20 + rad * np.cos(ang), 15 + rad * np.sin(ang)], 1)
        ours = decode_segmentation([pts.reshape(-1).tolist()], 30, 41)
        theirs = mask_api.decode(mask_api.merge(mask_api.frPyObjects([pts.reshape(-1).tolist()], 30, 41)))
        perimeter = np.linalg.norm(pts - np.roll(pts, 1, 0), axis=1).sum()
        assert (ours != theirs).sum() <= 0.3 * perimeter  # only boundary pixels may differ
        assert abs(int(ours.sum()) - int(theirs.sum())) <= 0.1 * perimeter  # no area bias


def _disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


@pytest.fixture
def coco_file(tmp_path):
    disk = _disk(60, 80, 30, 50, 20)
    box = np.zeros((60, 80), np.uint8)
    box[5:45, 10:30] = 1
    data = {
        "images": [{"id": 1, "file_name": "train/a.jpg", "height": 60, "width": 80},
                   {"id": 2, "file_name": "b.jpg", "height": 40, "width": 40}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 800.0,
             "segmentation": [[10, 5, 30, 5, 30, 45, 10, 45]]},
            {"id": 11, "image_id": 1, "category_id": 2, "iscrowd": 0, "segmentation": rle_encode(disk)},
            {"id": 12, "image_id": 2, "category_id": 1, "iscrowd": 1,
             "segmentation": rle_encode(np.ones((40, 40), np.uint8), compressed=False)},
            {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 4.0,
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
        ],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, box, disk


def test_coco_bank_and_objects_mask(coco_file):
    path, box, disk = coco_file
    bank = ShapeBank.from_coco(path, min_area=100)
    assert len(bank) == 2  # crowd and tiny annotations skipped
    poly, rle = bank
    assert (poly.kind, poly.width, poly.height) == ("polygon", 20, 40)
    assert np.array_equal(poly.render(1.0), np.ones((40, 20), np.uint8))
    assert rle.kind == "rle" and rle.area == disk.sum()
    ys, xs = np.nonzero(disk)
    assert np.array_equal(rle.render(1.0), disk[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    half = rle.render(0.5)
    assert half.shape == (round(rle.height * 0.5), round(rle.width * 0.5))
    assert abs(half.sum() - disk.sum() / 4) / (disk.sum() / 4) < 0.1
    assert len(ShapeBank.from_coco(path, min_area=1, include_crowd=True)) == 4
    assert len(ShapeBank.from_coco(path, min_area=1, category_ids=[2])) == 1

    coco = CocoAnnotations.load(path)
    assert np.array_equal(coco.objects_mask("a.jpg"), box | disk)  # matched by base name
    assert coco.objects_mask("b.jpg").all()  # crowd included by default
    assert coco.objects_mask("b.jpg", include_crowd=False).sum() == 4
    assert coco.objects_mask("missing.jpg") is None


def test_coco_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        ShapeBank.from_coco(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="not a COCO instances file"):
        CocoAnnotations.load(bad)
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a", "height": 4, "width": 4}],
                               "annotations": [{"image_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]}]}))
    with pytest.raises(InputError, match="no object annotations with area"):
        ShapeBank.from_coco(bad)
    with pytest.raises(InputError, match="not found"):
        ShapeBank.from_coco(tmp_path / "missing.json")


def test_object_masks_from_coco_shapes(coco_file):
    bank = ShapeBank.from_coco(coco_file[0], min_area=100)
    rng = np.random.default_rng(0)
    masks = [object_shape(64, 64, rng, shapes=bank, hole_range=(0.1, 0.5)) for _ in range(100)]
    ratios = np.array([m.mean() for m in masks])
    assert ratios.min() >= 0.1 and ratios.max() <= 0.5
    # the polygon is a filled rectangle: at least some masks are a single solid box
    def is_box(m):
        ys, xs = np.nonzero(m)
        return m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
    assert sum(map(is_box, masks)) >= 10


def test_object_shape_flips():
    tri = np.zeros((40, 40), np.uint8)
    tri[np.tril_indices(40)] = 1  # lower-left triangle: a flip is visible
    shape_bank = ShapeBank([Shape("bitmap", tri, 40, 40, float(tri.sum()))], name="tri")
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(40):
        m = object_shape(48, 48, rng, shapes=shape_bank, hole_range=(0.3, 0.4), hflip_prob=0.5)
        ys, xs = np.nonzero(m)
        crop = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        kinds.add((int(crop[-1, 0]), int(crop[-1, -1]), int(crop[0, 0]), int(crop[0, -1])))
    assert kinds == {(1, 1, 1, 0), (1, 1, 0, 1)}  # both orientations, never upside down


def test_folder_bank(tmp_path):
    for i, r in enumerate((5, 9, 12)):
        Image.fromarray(_disk(32, 32, 16, 16, r) * 255).save(tmp_path / f"s{i}.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "empty.png")
    (tmp_path / "notes.txt").write_text("ignored")
    bank = ShapeBank.from_folder(tmp_path, min_area=10)
    assert len(bank) == 3 and bank.name.startswith("folder:")
    assert bank[0].render(1.0).sum() == _disk(32, 32, 16, 16, 5).sum()
    assert ShapeBank.load(tmp_path).name == bank.name
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(InputError, match="has no images"):
        ShapeBank.from_folder(empty)
    with pytest.raises(InputError, match="COCO .json file or a folder"):
        ShapeBank.load(tmp_path / "s0.png")


def test_synthetic_bank_is_fixed_and_varied():
    a, b = ShapeBank.synthetic(), ShapeBank.synthetic()
    assert a is b and len(a) == 256  # cached
    fresh = ShapeBank.synthetic(n=20, seed=1)
    again = ShapeBank.synthetic.__func__(ShapeBank, n=20, seed=1)
    assert all(np.array_equal(x.render(0.5), y.render(0.5)) for x, y in zip(fresh, again))
    fills = np.array([s.fill for s in a])
    assert 0.1 < fills.min() and fills.max() < 0.95 and fills.std() > 0.05
    assert {s.kind for s in a} == {"polygon", "bitmap"}
