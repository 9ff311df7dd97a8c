"""scripts/fetch_photos.py: curated list, hold-out split, crop builder, eval builder, and the
apt/dpkg path with ``apt-get`` mocked (a tiny .deb is built locally with dpkg-deb). No network."""

from __future__ import annotations

import bz2
import importlib.util
import io
import json
import pickle
import zipfile
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from asuka.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fp():
    spec = importlib.util.spec_from_file_location("fetch_photos", ROOT / "scripts" / "fetch_photos.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fetch_photos"] = mod  # dataclasses look the module up by name
    spec.loader.exec_module(mod)
    return mod


def _photo(path: Path, size, mode="RGB", seed=0):
    """A smooth random colour field (not constant, so crops differ from one another)."""
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 50), max(2, w // 50), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BILINEAR).convert(mode)
    img.save(path)
    return path


# --------------------------------------------------------------------------- catalogue / split

EXPECTED_EVAL = [
    "mate-Dune", "mate-LadyBird", "mate-RainDrops", "plasma-EveningGlow", "plasma-Path",
    "skimage-astronaut", "sklearn-china", "mpl-grace_hopper",
    "jigzo-gorilla2", "jigzo-windmill", "scipy-face",
    "lxqt-Valendas", "kpa-skagen_2", "gcompris-erase-cheetah", "gcompris-monument-montStMichel",
    "gcompris-sea-sea2",
]


def test_catalogue_valid_and_hold_out_is_the_fixed_list(fp):
    fp.check_catalogue(fp.CATALOGUE)
    splits = fp.split_ids(fp.CATALOGUE)
    assert splits["eval"] == EXPECTED_EVAL
    assert splits == fp.split_ids(fp.CATALOGUE)  # no hidden randomness
    assert not set(splits["train"]) & set(splits["eval"])
    assert len(splits["train"]) + len(splits["eval"]) == len(fp.CATALOGUE)
    assert len(splits["eval"]) > 7  # issue 9: a fixed held-out set of more than 7 photos
    # spread across every source package with at least 8 photos (and, for the larger
    # collections, across their kinds of picture)
    counts: dict[str, int] = {}
    for p in fp.CATALOGUE:
        counts[p.package] = counts.get(p.package, 0) + 1
    by_pkg = {p.package for p in fp.CATALOGUE if p.split == "eval"}
    assert by_pkg >= {pkg for pkg, n in counts.items() if n >= 8}, counts
    assert {p.id.split("-")[1] for p in fp.CATALOGUE if p.split == "eval" and p.package == "gcompris-qt-data"} == {
        "erase", "monument", "sea"}
    # nothing is both kept and rejected
    kept = {p.locator for p in fp.CATALOGUE if p.source == "debian"}
    assert not kept & set(fp.REJECTED)


def test_check_catalogue_rejects_bad_entries(fp):
    p = fp.CATALOGUE[0]
    with pytest.raises(InputError, match="twice"):
        fp.check_catalogue([p, p])
    with pytest.raises(InputError, match="split"):
        fp.check_catalogue([fp.Photo(**{**p.__dict__, "split": "test"})])
    with pytest.raises(InputError, match="licence"):
        fp.check_catalogue([fp.Photo(**{**p.__dict__, "licence": ""})])


def test_data_readme_lists_every_photo(fp):
    text = (ROOT / "data" / "README.md").read_text()
    for p in fp.CATALOGUE:
        assert f"| {p.id} | {p.split} |" in text, p.id


# --------------------------------------------------------------------------- crops


def test_crop_windows_deterministic_prefix_stable_and_in_bounds(fp):
    params = fp.CropParams(crop_size=64, seed=3, max_short_side=400)
    a = fp.crop_windows("x", (600, 400), 50, params)
    assert a == fp.crop_windows("x", (600, 400), 50, params)
    assert a[:20] == fp.crop_windows("x", (600, 400), 20, params)  # more crops keep the old ones
    assert a != fp.crop_windows("y", (600, 400), 50, params)  # per-photo stream
    assert a != fp.crop_windows("x", (600, 400), 50, fp.CropParams(64, 4, 400))
    sides = [s for _, _, s in a]
    assert all(64 <= s <= 400 for s in sides)
    assert len(set(sides)) > 10  # the scale really varies
    assert all(0 <= x and x + s <= 600 and 0 <= y and y + s <= 400 for x, y, s in a)
    with pytest.raises(InputError, match="smaller than the crop size"):
        fp.crop_windows("x", (600, 40), 1, params)


def test_downscale_short_side(fp):
    img = Image.new("RGB", (3000, 2000))
    assert fp.downscale_short_side(img, 500).size == (750, 500)
    assert fp.downscale_short_side(img, 4000).size == (3000, 2000)  # never enlarges


def test_build_train_crops_deterministic_idempotent_and_clean(fp, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photos = {
        "big": _photo(src / "big.jpg", (1500, 1000), seed=1),
        "grey": _photo(src / "grey.png", (300, 260), mode="L", seed=2),
        "alpha": _photo(src / "alpha.png", (200, 240), mode="RGBA", seed=3),
        "tiny": _photo(src / "tiny.png", (40, 90), seed=4),
    }
    params = fp.CropParams(crop_size=48, seed=0, max_short_side=120)
    out = tmp_path / "crops"
    st = fp.build_train_crops(photos, out, crops_per_image=5, params=params)
    assert st == {"written": 15, "kept": 0, "removed": 0, "skipped_photos": 1}  # tiny < 48 px
    files = sorted(out.glob("*.png"))
    assert len(files) == 15
    for f in files:
        with Image.open(f) as im:
            assert im.size == (48, 48) and im.mode == "RGB"
    meta = json.loads((out / "params.json").read_text())
    # windows lie on the photo downscaled to short side 120 (1500x1000 -> 180x120)
    assert all(x + s <= 180 and y + s <= 120 and s <= 120 for x, y, s in meta["windows"]["big"])

    # same seed elsewhere -> identical bytes; re-run -> nothing rewritten
    out2 = tmp_path / "crops2"
    fp.build_train_crops(photos, out2, crops_per_image=5, params=params)
    for f in files:
        assert f.read_bytes() == (out2 / f.name).read_bytes()
    st = fp.build_train_crops(photos, out, crops_per_image=5, params=params)
    assert st["written"] == 0 and st["kept"] == 15

    # more crops: old ones unchanged; a photo leaving the training set loses its crops
    before = (out / "big_0000.png").read_bytes()
    del photos["alpha"]
    st = fp.build_train_crops(photos, out, crops_per_image=7, params=params)
    assert st["removed"] == 5 and st["written"] == 4
    assert (out / "big_0000.png").read_bytes() == before
    assert not list(out.glob("alpha_*.png"))

    # another seed gives other crops, and cannot be mixed into the same folder
    out3 = tmp_path / "crops3"
    fp.build_train_crops(photos, out3, crops_per_image=1, params=fp.CropParams(48, 1, 120))
    assert (out3 / "big_0000.png").read_bytes() != before
    with pytest.raises(InputError, match="other parameters"):
        fp.build_train_crops(photos, out, crops_per_image=5, params=fp.CropParams(48, 1, 120))


def test_build_eval_centre_square(fp, tmp_path):
    # red margins left and right of a blue centre square: the eval image must be all blue
    a = np.zeros((100, 160, 3), np.uint8)
    a[:, :, 2] = 255
    a[:, :30] = (255, 0, 0)
    a[:, 130:] = (255, 0, 0)
    Image.fromarray(a).save(tmp_path / "p.png")
    n = fp.build_eval({"p": tmp_path / "p.png"}, tmp_path / "eval", (64, 512))
    assert n == 2
    for size in (64, 512):
        with Image.open(tmp_path / "eval" / str(size) / "p.png") as im:
            got = np.asarray(im)
        assert got.shape == (size, size, 3)
        assert got[..., 0].max() < 8 and got[..., 2].min() > 247
    assert fp.build_eval({"p": tmp_path / "p.png"}, tmp_path / "eval", (64, 512)) == 0


# --------------------------------------------------------------------------- end to end, apt mocked


def _fake_package(tmp: Path) -> Path:
    """A package tree with one MATE-style photo, one Plasma-style wallpaper, one rejected file."""
    root = tmp / "pkgtree"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fake-wallpapers\nVersion: 1.2-3\nArchitecture: all\n"
        "Maintainer: Nobody <nobody@example.org>\nDescription: test\n"
    )
    doc = root / "usr/share/doc/fake-wallpapers"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nLicense: GPL-2+\n")
    nat = root / "usr/share/backgrounds/fake/nature"
    nat.mkdir(parents=True)
    _photo(nat / "Field.jpg", (400, 300), seed=5)
    _photo(nat / "Logo.png", (100, 100), seed=6)
    wp = root / "usr/share/wallpapers/Lake/contents/images"
    wp.mkdir(parents=True)
    _photo(wp / "640x480.jpg", (640, 480), seed=7)
    _photo(wp / "1280x800.jpg", (1280, 800), seed=8)
    (root / "usr/share/wallpapers/Lake/metadata.json").write_text('{"KPlugin": {"License": "LGPLv3"}}')
    return root


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_main_end_to_end_with_mocked_apt(fp, tmp_path):
    tree = _fake_package(tmp_path)
    calls = []

    def runner(cmd, cwd=None, **kw):
        calls.append(cmd[:2])
        if cmd[:2] == ["apt-get", "download"]:
            if calls.count(["apt-get", "download"]) == 1:  # first try fails: stale lists
                return subprocess.CompletedProcess(cmd, 100, "", "E: Can't select candidate")
            subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree),
                            str(Path(cwd) / "fake-wallpapers_1.2-3_all.deb")], check=True, capture_output=True)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if cmd[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.run(cmd, cwd=cwd, **kw)  # dpkg -x / dpkg-deb -f for real

    common = dict(package="fake-wallpapers", licence="GPL-2+", author="A. Person", content="c")
    cat = (
        fp.Photo("fake-Field", "debian", locator="usr/share/backgrounds/fake/nature/Field.jpg", **common),
        fp.Photo("fake-Lake", "debian", locator="usr/share/wallpapers/Lake", split="eval", **common),
        fp.Photo("skimage-coffee", "skimage", "scikit-image", "coffee", "CC0", "R. M.", "cup"),
        fp.Photo("sklearn-flower", "sklearn", "scikit-learn", "flower.jpg", "CC-BY-2.0", "v", "dahlia",
                 split="eval"),
    )
    out = tmp_path / "out"
    argv = ["--out", str(out), "--crop-size", "32", "--crops-per-image", "3", "--seed", "0",
            "--max-short-side", "64", "--eval-size", "48"]
    assert fp.main(argv, catalogue=cat, run=runner) == 0
    assert calls.count(["apt-get", "download"]) == 2 and ["apt-get", "update"] in calls

    lic = json.loads((out / "LICENSES.json").read_text())["photos"]
    by_id = {r["id"]: r for r in lic}
    assert by_id["fake-Lake"]["path_in_source"].endswith("Lake/contents/images/1280x800.jpg")  # largest
    assert by_id["fake-Lake"]["size_wh"] == [1280, 800]
    assert by_id["fake-Field"]["source"] == "fake-wallpapers 1.2-3"
    assert by_id["sklearn-flower"]["licence"] == "CC-BY-2.0"
    assert (out / "licenses" / "fake-wallpapers.copyright").read_text().startswith("Files: *")
    assert (out / "licenses" / "fake-Lake.metadata.json").is_file()
    assert json.loads((out / "splits.json").read_text()) == {
        "train": ["fake-Field", "skimage-coffee"], "eval": ["fake-Lake", "sklearn-flower"]}
    assert len(list((out / "train_crops" / "32").glob("*.png"))) == 6
    assert sorted(f.name for f in (out / "eval" / "512").iterdir()) == ["fake-Lake.png", "sklearn-flower.png"]
    assert len(list((out / "eval" / "48").glob("*.png"))) == 2
    snapshot = {f: f.read_bytes() for f in out.rglob("*.png")}

    # second run: nothing downloaded, nothing changed
    n_calls = len(calls)
    assert fp.main(argv, catalogue=cat, run=runner) == 0
    assert len(calls) == n_calls
    assert {f: f.read_bytes() for f in out.rglob("*.png")} == snapshot


def test_main_reports_apt_failure_as_one_line(fp, tmp_path, capsys):
    def runner(cmd, cwd=None, **kw):
        if cmd[:2] == ["apt-get", "update"]:
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package")

    cat = (fp.Photo("fake-Field", "debian", "fake-wallpapers", "usr/x.jpg", "GPL-2+", "A", "c"),)
    assert fp.main(["--out", str(tmp_path / "o")], catalogue=cat, run=runner) == 2
    err = capsys.readouterr().err
    assert "apt-get download fake-wallpapers failed" in err and "Unable to locate package" in err


def test_reserved_packages_are_refused(fp, tmp_path):
    """lomiri-wallpapers* is the independent test set: never in the catalogue, never fetched."""
    p = fp.Photo("lomiri-x", "debian", "lomiri-wallpapers-20.04", "usr/x.jpg", "CC-BY-SA", "A", "c")
    with pytest.raises(InputError, match="reserved for independent testing"):
        fp.check_catalogue([p])
    calls = []
    with pytest.raises(InputError, match="reserved"):
        fp.download_debs(["mate-backgrounds", "lomiri-wallpapers"], tmp_path,
                         run=lambda *a, **k: calls.append(a))
    assert calls == []  # refused before apt-get runs
    (tmp_path / "lomiri-wallpapers_1_all.deb").write_bytes(b"")
    with pytest.raises(InputError, match="reserved"):
        fp.find_debs(["lomiri-wallpapers"], tmp_path)
    assert not any(x.package.startswith("lomiri") for x in fp.CATALOGUE)


def test_flat_fraction_separates_flat_art_from_texture(fp):
    rng = np.random.default_rng(0)
    flat = np.zeros((64, 64, 3), np.uint8)
    flat[:, 32:] = (200, 40, 40)  # two flat colours: a vector illustration
    noisy = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # sensor-noise-like texture
    assert fp.flat_fraction(Image.fromarray(flat)) > 0.9
    assert fp.flat_fraction(Image.fromarray(noisy)) < 0.05
    assert fp.FLAT_WARNING == 0.5


# --------------------------------------------------------------------------- jigzo puzzles, SciPy samples


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _fake_pzl(path: Path, picture: Image.Image, at=(0, 0)) -> Path:
    """A puzzle as jigzo writes it: header with the texture map, a thumbnail, then the atlas."""
    w, h = picture.size
    atlas = Image.new("RGB", (w + at[0] + 40, h + at[1] + 30), (0, 0, 0))
    atlas.paste(picture, at)
    thumb = picture.resize((w // 4, h // 4))
    header = (f"PzlF\n0.1\nfake-2x2\nhttp://example.org/\nfake-2x2.map\n99\n#texture map data\n"
              f"crop000 {w} 0 20 20 10 10 0 0 0 0\nimage {at[0]} {at[1]} {w} {h} 1 1    \nfake-t.jpg\n").encode()
    path.write_bytes(header + _jpeg_bytes(thumb) + b"\nfake.jpg\n" + _jpeg_bytes(atlas))
    return path


def test_pzl_photo_is_the_image_rectangle_of_the_atlas(fp, tmp_path):
    picture = Image.open(_photo(tmp_path / "p.png", (120, 90), seed=3)).convert("RGB")
    got = fp.pzl_photo(_fake_pzl(tmp_path / "fake-2x2.pzl", picture, at=(7, 5)))
    assert got.size == (120, 90) and got.mode == "RGB"
    diff = np.abs(np.asarray(got, np.int16) - np.asarray(picture, np.int16))
    assert diff.mean() < 3  # JPEG round trip only: the right rectangle of the right (largest) image
    (tmp_path / "bad.pzl").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match="not a jigzo puzzle"):
        fp.pzl_photo(tmp_path / "bad.pzl")
    (tmp_path / "nomap.pzl").write_bytes(b"PzlF\n0.1\n" + _jpeg_bytes(picture))
    with pytest.raises(InputError, match="image X Y W H"):
        fp.pzl_photo(tmp_path / "nomap.pzl")


def test_jigzo_entries_point_at_puzzles_and_skip_the_non_free_one(fp):
    jigzo = [p for p in fp.CATALOGUE if p.package == "jigzo-data"]
    assert len(jigzo) == 11 and all(p.locator.endswith(".pzl") for p in jigzo)
    assert not any("penguin" in p.locator for p in jigzo)  # CC-BY-NC-SA: not free
    assert any("penguin" in k and "NC" in v for k, v in fp.REJECTED.items())
    assert "jigzo-data" in fp.DEBIAN_PACKAGES


def _fake_scipy_wheel(folder: Path, face: np.ndarray, ascent: np.ndarray) -> Path:
    wheel = folder / "scipy-1.11.4-cp311-cp311-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("scipy/misc/face.dat", bz2.compress(face.tobytes()))
        zf.writestr("scipy/misc/ascent.dat", pickle.dumps(ascent.tolist()))
        zf.writestr("scipy-1.11.4.dist-info/LICENSE.txt", "BSD-3-Clause")
    return wheel


def test_scipy_samples_from_a_wheel_without_loading_classes(fp, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    ascent = rng.integers(0, 256, (512, 512), dtype=np.uint8)
    calls = []

    def runner(cmd, cwd=None, **kw):  # pip download, mocked: drop a wheel in the -d folder
        calls.append(cmd)
        _fake_scipy_wheel(Path(cmd[cmd.index("-d") + 1]), face, ascent)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    import scipy
    monkeypatch.setattr(scipy, "__file__", str(tmp_path / "no-misc" / "__init__.py"))  # an installed SciPy >= 1.12
    lic = tmp_path / "licenses"
    lic.mkdir()
    where, inner = fp.fetch_scipy_sample("face", tmp_path / "face.png", lic, run=runner)
    assert (where, inner) == ("scipy 1.11.4 (wheel)", "scipy/misc/face.dat")
    assert calls[0][-1] == "scipy<1.12" and "--no-deps" in calls[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "face.png")), face)
    assert (lic / "scipy.LICENSE.txt").read_text() == "BSD-3-Clause"
    fp.fetch_scipy_sample("ascent", tmp_path / "ascent.png", lic, run=runner)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ascent.png")), ascent)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        fp.scipy_sample_array("ascent", pickle.dumps([[1, 2], Evil()]))
    with pytest.raises(InputError, match="768 x 1024 x 3"):
        fp.scipy_sample_array("face", bz2.compress(b"123"))
    with pytest.raises(InputError, match="'face' or 'ascent'"):
        fp.scipy_sample_array("ecg", b"")
    failing = lambda cmd, cwd=None, **kw: subprocess.CompletedProcess(cmd, 1, "", "No matching distribution")
    with pytest.raises(InputError, match="pip download 'scipy<1.12' failed.*No matching distribution"):
        fp.fetch_scipy_sample("face", tmp_path / "f2.png", lic, run=failing)


# --------------------------------------------------------------------------- Qt resource files (GCompris)


def _qt_resource_file(files: dict[str, bytes], compressed=()) -> bytes:
    """A Qt binary resource file (format version 2) holding ``files`` by path, written as rcc lays
    it out: the tree breadth first, each directory's children contiguous and sorted."""
    import struct
    import zlib

    tree: dict = {}
    for path, blob in files.items():
        node = tree
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = (path, blob)
    names, data, nodes = bytearray(), bytearray(), []

    def name_offset(name):
        at = len(names)
        names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return at

    queue = [("", tree)]
    nodes.append(None)  # the root, index 0
    slots = {0: queue[0]}
    index = 0
    while index < len(nodes):
        name, content = slots[index]
        if isinstance(content, dict):
            first = len(nodes)
            for child in sorted(content):
                slots[len(nodes)] = (child, content[child])
                nodes.append(None)
            nodes[index] = struct.pack(">IHII", name_offset(name) if index else 0, 2, len(content), first) + bytes(8)
        else:
            path, blob = content
            flags = 0
            if path in compressed:
                blob, flags = struct.pack(">I", len(blob)) + zlib.compress(blob), 1
            at = len(data)
            data.extend(struct.pack(">I", len(blob)) + blob)
            nodes[index] = struct.pack(">IHHHI", name_offset(name), flags, 0, 0, at) + bytes(8)
        index += 1
    tree_bytes = b"".join(nodes)
    tree_at = 20
    data_at = tree_at + len(tree_bytes)
    names_at = data_at + len(data)
    return b"qres" + struct.pack(">IIII", 2, tree_at, data_at, names_at) + tree_bytes + bytes(data) + bytes(names)


def test_qt_resource_files_reads_every_file_and_refuses_damage(fp):
    files = {"a/b/c.webp": b"x" * 50, "a/b/README": b"hello", "a/d.txt": b"", "top.bin": bytes(range(256))}
    blob = _qt_resource_file(files, compressed={"a/b/c.webp", "top.bin"})
    assert fp.qt_resource_files(blob) == files
    with pytest.raises(InputError, match="not a Qt resource file"):
        fp.qt_resource_files(b"PK\x03\x04" + blob[4:], "x.rcc")
    with pytest.raises(InputError, match="x.rcc: malformed"):
        fp.qt_resource_files(blob[:40], "x.rcc")
    with pytest.raises(InputError, match="version 9"):
        fp.qt_resource_files(b"qres" + (9).to_bytes(4, "big") + blob[8:], "x.rcc")


def test_readme_attribution_finds_the_stanza_naming_the_file(fp):
    readme = (b"Copyright: Someone, 2022\nLicense: CC-BY-SA 4.0\nFiles:\nsquare.svg\n\n"
              b"Copyright: A. Photographer / Wikimedia Commons\nSource: https://commons.example/File:X.jpg\n"
              b"License: CC-BY-SA-4.0\nComments: cropping,\n sharpening\nFiles: alpaca.webp\n\n"
              b"Copyright: Others\nLicense: Public Domain\nFiles:\nsea*.webp\n\n"
              b"Copyright: B. Builder\nLicense: CC0-1.0\nFiles:\nwonders/petra.webp\n")
    files = {"act/resource/README": readme, "act/resource/animals/alpaca.webp": b"", "act/resource/sea1.webp": b""}
    got = fp.readme_attribution(files, "act/resource/animals/alpaca.webp")  # the README of a parent folder
    assert got == {"copyright": "A. Photographer / Wikimedia Commons", "source": "https://commons.example/File:X.jpg",
                   "license": "CC-BY-SA-4.0", "comments": "cropping, sharpening"}
    assert fp.readme_attribution(files, "act/resource/sea1.webp")["license"] == "Public Domain"  # a pattern
    assert fp.readme_attribution(files, "act/resource/wonders/petra.webp")["copyright"] == "B. Builder"  # by path
    assert fp.readme_attribution(files, "act/resource/other.webp") == {}
    assert fp.readme_attribution({}, "act/resource/sea1.webp") == {}


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_main_reads_a_photo_inside_a_qt_resource_file_with_its_readme(fp, tmp_path):
    root = tmp_path / "pkgtree"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fake-edu\nVersion: 2.0-1\nArchitecture: all\nMaintainer: Nobody <nobody@example.org>\n"
        "Description: test\n")
    (root / "usr/share/doc/fake-edu").mkdir(parents=True)
    (root / "usr/share/doc/fake-edu/copyright").write_text("Files: *\nLicense: GPL-3+\n")
    photo = _photo(tmp_path / "p.png", (200, 150), seed=4)
    buf = io.BytesIO()
    Image.open(photo).save(buf, format="WEBP", lossless=True)
    rcc = _qt_resource_file({"edu/act/resource/fox.webp": buf.getvalue(),
                             "edu/act/resource/README": b"Copyright: A. Fox\nLicense: CC0-1.0\nFiles: fox.webp\n"},
                            compressed={"edu/act/resource/README"})
    (root / "usr/share/edu/rcc").mkdir(parents=True)
    (root / "usr/share/edu/rcc/act.rcc").write_bytes(rcc)
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(debs / "fake-edu_2.0-1_all.deb")],
                   check=True, capture_output=True)
    cat = (fp.Photo("edu-fox", "debian", "fake-edu", f"usr/share/edu/rcc/act.rcc{fp.INNER}edu/act/resource/fox.webp",
                    "GPL-3+ (debian/copyright)", "GCompris", "a fox"),
           fp.Photo("skimage-coffee", "skimage", "scikit-image", "coffee", "CC0", "R. M.", "cup", split="eval"))
    out = tmp_path / "out"
    argv = ["--out", str(out), "--crop-size", "32", "--crops-per-image", "2", "--max-short-side", "64",
            "--deb-dir", str(debs)]
    assert fp.main(argv, catalogue=cat) == 0
    record = {r["id"]: r for r in json.loads((out / "LICENSES.json").read_text())["photos"]}["edu-fox"]
    assert record["licence"] == "CC0-1.0 (upstream README); package: GPL-3+ (debian/copyright)"
    assert record["author"] == "A. Fox" and record["upstream"] == {"copyright": "A. Fox", "license": "CC0-1.0"}
    assert record["source"] == "fake-edu 2.0-1" and record["size_wh"] == [200, 150]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "originals" / "edu-fox.png")),
                                  np.asarray(Image.open(photo).convert("RGB")))  # lossless: the same pixels
    missing = (fp.Photo("edu-cat", "debian", "fake-edu", f"usr/share/edu/rcc/act.rcc{fp.INNER}edu/act/resource/cat.webp",
                        "GPL-3+", "GCompris", "a cat"),)
    assert fp.main(["--out", str(tmp_path / "out2"), "--deb-dir", str(debs)], catalogue=missing) == 2
