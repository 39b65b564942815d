"""The Fréchet distance (videopoet/data/frechet.py) against closed forms, its extractors, and
`videopoet evaluate --fvd`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from videopoet.cli import main
from videopoet.core.errors import ConfigError
from videopoet.data import frechet, world
from videopoet.data.frechet import FeatureStats, frechet_distance, gaussian_frechet


def _random_psd(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    factor = rng.normal(size=(dim, rank or dim))
    return factor @ factor.T


def test_one_dimension_is_mean_and_deviation_gaps():
    # d^2 = (m1 - m2)^2 + (s1 - s2)^2 for N(m1, s1^2) and N(m2, s2^2)
    for m1, s1, m2, s2 in [(0, 1, 0, 1), (1.5, 2.0, -0.5, 0.5), (3, 0.1, 3, 4)]:
        got = gaussian_frechet(np.array([m1]), np.array([[s1**2]]), np.array([m2]), [[s2**2]])
        assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-10, abs=1e-12)


def test_diagonal_covariances_add_up_per_dimension():
    rng = np.random.default_rng(0)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.01, 5, 6), rng.uniform(0.01, 5, 6)
    expected = ((mean_a - mean_b) ** 2 + (np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    got = gaussian_frechet(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_rotated_covariances_match_the_closed_form():
    # covariances sharing eigenvectors: the cross term is sum sqrt(l_a l_b)
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    la, lb = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    cov_a, cov_b = basis @ np.diag(la) @ basis.T, basis @ np.diag(lb) @ basis.T
    expected = ((np.sqrt(la) - np.sqrt(lb)) ** 2).sum()
    assert gaussian_frechet(np.zeros(5), cov_a, np.zeros(5), cov_b) == pytest.approx(expected)


def test_general_covariances_match_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    for _ in range(5):
        cov_a, cov_b = _random_psd(rng, 8), _random_psd(rng, 8)
        mean_a, mean_b = rng.normal(size=8), rng.normal(size=8)
        cross = np.real(linalg.sqrtm(cov_a @ cov_b))
        expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * cross)
        got = gaussian_frechet(mean_a, cov_a, mean_b, cov_b)
        assert got == pytest.approx(expected, rel=1e-8)
        assert got == pytest.approx(gaussian_frechet(mean_b, cov_b, mean_a, cov_a), rel=1e-8)


def test_identical_and_singular_sets():
    rng = np.random.default_rng(3)
    cov = _random_psd(rng, 10, rank=3)  # singular: fewer samples than dimensions look like this
    mean = rng.normal(size=10)
    assert gaussian_frechet(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)
    other = _random_psd(rng, 10, rank=2)
    value = gaussian_frechet(mean, cov, mean, other)
    assert math.isfinite(value) and value > 0
    features = rng.normal(size=(4, 10))  # 4 vectors in 10 dims
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)


def test_samples_converge_to_the_closed_form():
    rng = np.random.default_rng(4)
    mean_a, mean_b = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    cov_a, cov_b = np.diag([1.0, 2.0, 0.5]), np.diag([0.25, 2.0, 1.0])
    a = rng.multivariate_normal(mean_a, cov_a, size=200_000)
    b = rng.multivariate_normal(mean_b, cov_b, size=200_000)
    expected = gaussian_frechet(mean_a, cov_a, mean_b, cov_b)
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.02)
    stats = FeatureStats.of(torch.from_numpy(a))
    assert stats.count == 200_000 and stats.cov.shape == (3, 3)


def test_bad_feature_sets_are_named():
    with pytest.raises(ConfigError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="dims"):
        frechet_distance(np.random.rand(4, 3), np.random.rand(4, 2))
    with pytest.raises(ConfigError, match="finite"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="cov_b"):
        gaussian_frechet(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# ---------------------------------------------------------------------------- extractors


def _clips(indices, frames=9, size=32):
    return [world.sample(world.EVAL_OFFSET + i, frames, size, size).video for i in indices]


def test_analyser_features_tell_the_world_from_noise():
    extractor = frechet.get_extractor("analyser")
    real, other = extractor(_clips(range(12))), extractor(_clips(range(12, 24)))
    assert real.shape == (12, extractor.dim) and np.isfinite(real).all()
    generator = torch.Generator().manual_seed(0)
    noise = [torch.rand(3, 9, 32, 32, generator=generator) * 2 - 1 for _ in range(12)]
    blank = extractor([torch.zeros(3, 9, 32, 32)])
    assert np.isfinite(blank).all()  # no object found: still a finite vector
    assert frechet_distance(real, other) < frechet_distance(real, extractor(noise))


def test_extractor_registry():
    with pytest.raises(ConfigError, match="did you mean analyser"):
        frechet.get_extractor("analyzer")
    with pytest.raises(ConfigError, match="not registered yet"):
        frechet.register_extractor("analyser", frechet.AnalyserFeatures)
    with pytest.raises(ConfigError, match="network folder"):
        frechet.extractor_from_argument("no/such/folder")
    with pytest.raises(ConfigError, match="folder of a feature network"):
        frechet.extractor_from_argument("network")


def test_network_extractor_from_a_local_folder(tmp_path):
    config = frechet.NetworkConfig(
        architecture="conv3d", options={"widths": [4, 8]}, frames=8, height=16, width=16
    )
    torch.manual_seed(0)
    module = frechet.Conv3dEncoder(frechet.Conv3dConfig(widths=[4, 8]))
    frechet.save_feature_network(tmp_path / "net", module, config)
    extractor = frechet.extractor_from_argument(str(tmp_path / "net"))
    assert extractor.dim == 8
    features = extractor(_clips(range(3)))  # 9 x 32 x 32, resampled to 8 x 16 x 16
    assert features.shape == (3, 8) and np.isfinite(features).all()
    again = frechet.get_extractor("network", path=tmp_path / "net")(_clips(range(3)))
    assert np.array_equal(features, again)

    bad = json.loads((tmp_path / "net" / "config.json").read_text())
    bad["architecture"] = "i3d"
    (tmp_path / "net" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="architecture"):
        frechet.get_extractor("network", path=tmp_path / "net")
    bad.update(architecture="conv3d", options={"widths": [4, 16]})
    (tmp_path / "net" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="another shape"):
        frechet.get_extractor("network", path=tmp_path / "net")


# ---------------------------------------------------------------------------- evaluate


def test_evaluate_fvd(tiny_bundle, capsys):
    args = ["evaluate", str(tiny_bundle), "--tasks", "i2v", "--seeds", "1", "--quiet"]
    assert main([*args, "--json", "--fvd", "--fvd-clips", "3"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["t2v_fvd"] >= 0 and payload["untrained"]["t2v_fvd"] >= 0
    assert payload["fvd"]["extractor"] == "analyser" and payload["fvd"]["clips"] == 3
    assert payload["fvd"]["real_vs_real"] >= 0
    assert main([*args, "--fvd", "--fvd-clips", "1"]) == 2
    assert "fvd_clips=1" in capsys.readouterr().err
    assert main([*args, "--fvd", "--fvd-features", "nope"]) == 2
