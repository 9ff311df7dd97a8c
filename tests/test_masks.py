"""Mask generators and mixtures: polarity, determinism, ratio bounds, proportions, speed."""

import json
import time
from collections import Counter

import numpy as np
import pytest

from asuka.errors import InputError
from asuka.masks import (
    GENERATOR_NAMES,
    Component,
    HoleRangeError,
    MaskMixture,
    enlarge_to_ratio,
    free_form,
    get_generator,
    get_mixture,
    lama_irregular,
    misato_eval_mixture,
    object_shape,
    paper_train_mixture,
    rectangle,
    rectangle_complement,
    rng_for,
)


def _ratios(fn, n, size=64, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return np.array([fn(size, size, rng, **kw).mean() for _ in range(n)])


@pytest.mark.parametrize("name", GENERATOR_NAMES)
def test_generator_contract(name):
    gen = get_generator(name)
    a = gen(48, 80, np.random.default_rng(7))
    b = gen(48, 80, np.random.default_rng(7))
    c = gen(48, 80, np.random.default_rng(8))
    assert a.shape == (48, 80) and a.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0} and a.any()
    assert np.array_equal(a, b), "same seed must give the same mask"
    assert not np.array_equal(a, c), "different seeds should give different masks"


@pytest.mark.parametrize("name", GENERATOR_NAMES)
def test_generators_respect_hole_range(name):
    gen = get_generator(name)
    rng = np.random.default_rng(1)
    r = np.array([gen(64, 64, rng, hole_range=(0.2, 0.6)).mean() for _ in range(150)])
    assert r.min() >= 0.2 and r.max() <= 0.6


def test_rectangle_shapes_and_polarity():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rectangle(64, 96, rng, hole_range=(0.1, 0.4))
        ys, xs = np.nonzero(m)  # the hole (1) is exactly its bounding box
        assert m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
        assert m.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
        c = rectangle_complement(64, 96, rng, hole_range=(0.3, 0.7))
        ys, xs = np.nonzero(c == 0)  # the kept region (0) is one rectangle, the hole is outside
        assert (c[ys.min():ys.max() + 1, xs.min():xs.max() + 1] == 0).all()
        assert 0.3 <= c.mean() <= 0.7


def test_lama_scaling_keeps_ratio_distribution():
    # lengths/widths scale with the size, so the ratio distribution barely changes
    for preset in ("thin", "thick"):
        small = _ratios(lama_irregular, 300, size=64, preset=preset)
        large = _ratios(lama_irregular, 150, size=256, preset=preset, seed=1)
        assert abs(small.mean() - large.mean()) < 0.05, (preset, small.mean(), large.mean())
        assert small.max() <= 0.5  # the presets' evaluation rule: area > 0.5 rejected


def test_lama_presets_differ():
    # thin: many narrow strokes -> thin structures; thick: few wide strokes
    rng = np.random.default_rng(0)
    import cv2

    def thinness(m):  # fraction of hole pixels removed by a 5x5 erosion at 256 px
        return 1 - cv2.erode(m, np.ones((5, 5), np.uint8)).sum() / m.sum()

    thin = np.mean([thinness(lama_irregular(256, 256, rng, preset="thin")) for _ in range(30)])
    thick = np.mean([thinness(lama_irregular(256, 256, rng, preset="thick")) for _ in range(30)])
    assert thin > 2 * thick


def test_free_form_presets_order():
    comod = _ratios(free_form, 200, preset="comod")
    large = _ratios(free_form, 200, preset="mat-large")
    small = _ratios(free_form, 200, preset="mat-small")
    assert comod.mean() > large.mean() > small.mean()
    explicit = _ratios(free_form, 200, counts=(5, 3, 9))
    assert np.array_equal(explicit, large)


def test_bad_arguments_are_input_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="preset"):
        lama_irregular(64, 64, rng, preset="huge")
    with pytest.raises(InputError, match="unknown LaMa parameter"):
        lama_irregular(64, 64, rng, max_lenght=3)
    with pytest.raises(InputError, match="hole_range"):
        free_form(64, 64, rng, hole_range=(0.6, 0.2))
    with pytest.raises(InputError, match="numpy.random.Generator"):
        rectangle(64, 64, 0)
    with pytest.raises(InputError, match=">= 8"):
        rectangle(4, 64, rng)
    with pytest.raises(InputError, match="unknown mask generator"):
        get_generator("nope")
    with pytest.raises(InputError, match="unknown mask mix"):
        get_mixture("nope")
    with pytest.raises(HoleRangeError, match="no mask with hole ratio"):
        free_form(64, 64, rng, preset="mat-small", hole_range=(0.97, 0.99), max_tries=5)


def test_object_shape_on_base_keeps_base():
    rng = np.random.default_rng(3)
    base = rectangle(64, 64, rng, hole_range=(0.1, 0.2))
    m = object_shape(64, 64, rng, base=base, hole_range=(0.3, 0.6))
    assert (m >= base).all() and 0.3 <= m.mean() <= 0.6


def _family(name):
    if name.startswith("object"):
        return "object"
    if name.startswith("rectangle"):
        return "regular"
    return "irregular"


def test_paper_train_mixture_statistics():
    mix = paper_train_mixture()
    n = 1500
    draws = [mix.sample(64, 64, rng_for(11, i)) for i in range(n)]
    ratios = np.array([d.ratio for d in draws])
    assert ratios.min() >= 0.1 and ratios.max() <= 0.75
    fam = Counter(_family(d.generator) for d in draws)
    assert abs(fam["object"] / n - 0.5) < 0.04
    assert abs(fam["irregular"] / n - 0.4) < 0.04
    assert abs(fam["regular"] / n - 0.1) < 0.025
    names = Counter(d.generator for d in draws)
    combined = sum(v for k, v in names.items() if k.startswith("object+"))
    assert abs(combined / fam["object"] - 0.5) < 0.06  # combined with irregular half the time
    assert abs(names["rectangle"] / n - 0.05) < 0.02 and abs(names["rectangle-complement"] / n - 0.05) < 0.02
    assert abs(names["comod"] / fam["irregular"] - 0.5) < 0.08  # Co-Mod and LaMa share the irregular part
    assert {"lama-thin", "lama-medium", "lama-thick"} <= set(names)
    # the MAE enlargement: hole plus random cells, >= 75 % of the 16 x 16 cells touched
    for d in draws[:200]:
        assert (d.enlarged >= d.mask).all()
        cells = d.enlarged.reshape(16, 4, 16, 4).max(axis=(1, 3))
        assert cells.mean() >= 0.75
        json.dumps(d.to_json())
    assert all(d.params.get("adjusted") is None for d in draws if "+" not in d.generator)


def test_misato_eval_mixture_statistics():
    mix = misato_eval_mixture()
    n = 1000
    draws = [mix.sample(64, 64, rng_for(5, i)) for i in range(n)]
    ratios = np.array([d.ratio for d in draws])
    assert ratios.min() >= 0.2 and ratios.max() <= 0.8
    fam = Counter(_family(d.generator) for d in draws)
    assert fam["regular"] == 0
    assert abs(fam["object"] / n - 5 / 9) < 0.05
    assert draws[0].enlarged is None


def test_mixture_determinism_per_index():
    mix = paper_train_mixture()
    a = [mix.sample(64, 64, rng_for(3, i)) for i in range(20)]
    b = [mix.sample(64, 64, rng_for(3, i)) for i in reversed(range(20))][::-1]
    for x, y in zip(a, b):
        assert np.array_equal(x.mask, y.mask) and x.generator == y.generator and x.params == y.params
    assert not np.array_equal(a[0].mask, mix.sample(64, 64, rng_for(4, 0)).mask)


def test_mixture_pickles_for_dataloader_workers():
    import pickle

    mix = paper_train_mixture()
    clone = pickle.loads(pickle.dumps(mix))
    for i in range(30):  # covers the object-on-irregular components
        a, b = mix.sample(32, 32, rng_for(0, i)), clone.sample(32, 32, rng_for(0, i))
        assert a.generator == b.generator and np.array_equal(a.mask, b.mask)


def test_single_generator_mixtures():
    for name in GENERATOR_NAMES:
        d = get_mixture(name).sample(64, 64, np.random.default_rng(0))
        assert d.generator == name and d.ratio == pytest.approx(d.mask.mean())


def test_custom_mixture_and_validation():
    mix = MaskMixture([Component("rectangle", 3), Component("comod", 1)], ratio_range=(0.3, 0.5))
    names = Counter(mix.sample(32, 32, rng_for(0, i)).generator for i in range(400))
    assert 0.68 < names["rectangle"] / 400 < 0.82
    with pytest.raises(InputError, match="weights"):
        MaskMixture([Component("rectangle", 0)])
    with pytest.raises(InputError, match="overlay"):
        MaskMixture([Component("rectangle", 1, overlay=(Component("comod", 1),))])


def test_unreachable_range_is_adjusted_not_fatal():
    mix = MaskMixture([Component("mat-small", 1)], ratio_range=(0.9, 0.95), max_tries=3)
    d = mix.sample(64, 64, np.random.default_rng(0))
    assert 0.9 <= d.ratio <= 0.95 and d.params["adjusted"] is True


def test_enlarge_to_ratio():
    rng = np.random.default_rng(0)
    m = np.zeros((64, 64), np.float32)
    m[:8, :8] = 1
    e = enlarge_to_ratio(m, 0.5, rng, grid=8)
    cells = e.reshape(8, 8, 8, 8).max(axis=(1, 3))
    assert cells.sum() == 32 and (e >= m).all()
    full = np.ones((64, 64), np.float32)
    assert np.array_equal(enlarge_to_ratio(full, 0.5, rng), full)
    odd = enlarge_to_ratio(np.zeros((50, 70), np.float32), 0.75, rng, grid=(5, 7))
    assert odd.shape == (50, 70) and odd.mean() == pytest.approx(0.75, abs=0.05)
    with pytest.raises(InputError, match="grid"):
        enlarge_to_ratio(m, 0.5, rng, grid=100)


def test_sampling_speed():
    mix = paper_train_mixture()
    mix.sample(256, 256, np.random.default_rng(0))  # warm-up (shape bank)
    t = time.perf_counter()
    for i in range(60):
        mix.sample(256, 256, rng_for(0, i))
    per_mask = (time.perf_counter() - t) / 60
    assert per_mask < 0.03, f"{per_mask * 1e3:.1f} ms per 256x256 mask"
