"""Output noise: calibration of the Laplace and analytic Gaussian mechanisms, reproducibility, CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from scipy import optimize, stats

from keras_batch_score.pipelines import score
from keras_batch_score.transforms.core.errors import ConfigError
from keras_batch_score.transforms.postprocess import privacy
from tests import util

keras = util.keras
N_FEATURES = 4
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


# --------------------------------------------------------------------------- pure functions


def _keys(n: int) -> np.ndarray:
    return privacy.row_keys(pa.table({"id": np.arange(n, dtype=np.int64)}), ["id"])


def test_laplace_empirical_scale_matches_b():
    spec = privacy.make_spec("laplace", 0.5, None, 2.0, seed=11)
    assert spec.scale == 4.0  # b = S / E
    noise = privacy.noise(_keys(200_000), spec, 0, 1).ravel()
    assert abs(np.abs(noise).mean() - 4.0) / 4.0 < 0.05  # E|Laplace(b)| = b
    assert abs(noise.mean()) < 0.05
    assert abs(noise.std() - 4.0 * math.sqrt(2)) / (4.0 * math.sqrt(2)) < 0.05


def _reference_sigma(eps: float, delta: float, sens: float) -> float:
    """Balle & Wang's condition solved independently with scipy.stats + brentq."""

    def excess(sigma: float) -> float:
        a, b = sens / (2 * sigma), eps * sigma / sens
        return stats.norm.cdf(a - b) - math.exp(eps) * stats.norm.cdf(-a - b) - delta

    return optimize.brentq(excess, 1e-3 * sens, 1e3 * sens, xtol=1e-14, rtol=1e-13)


@pytest.mark.parametrize(
    ("eps", "delta", "sens"),
    [(0.1, 1e-5, 1.0), (0.5, 1e-6, 0.3), (0.9, 1e-3, 2.0), (2.0, 1e-5, 1.0), (5.0, 1e-8, 0.5)],
)
def test_analytic_gaussian_sigma_matches_independent_root(eps, delta, sens):
    sigma = privacy.analytic_gaussian_sigma(eps, delta, sens)
    assert sigma == pytest.approx(_reference_sigma(eps, delta, sens), rel=1e-6)
    assert privacy.gaussian_delta(sigma, eps, sens) <= delta  # on the private side
    if eps < 1:  # the classical mechanism is valid for eps < 1 and never tighter
        classical = sens * math.sqrt(2 * math.log(1.25 / delta)) / eps
        assert sigma < classical


def test_gaussian_empirical_std_matches_sigma():
    spec = privacy.make_spec("gaussian", 1.0, 1e-5, 1.0, seed=5)
    noise = privacy.noise(_keys(200_000), spec, 0, 1).ravel()
    assert abs(noise.std() - spec.scale) / spec.scale < 0.05
    assert abs(noise.mean()) < 0.05 * spec.scale
    # Gaussian, not merely the right width: the 97.5% quantile is 1.96 sigma
    assert np.quantile(noise, 0.975) / spec.scale == pytest.approx(1.96, rel=0.05)


def test_noise_is_a_function_of_seed_and_row_key_only():
    spec = privacy.make_spec("laplace", 1.0, None, 1.0, seed=3)
    keys = _keys(1000)
    values = np.zeros((1000, 3), dtype=np.float32)
    whole = privacy.add_noise(values, keys, spec, 0)
    order = np.random.default_rng(0).permutation(1000)
    shuffled = privacy.add_noise(values[order], keys[order], spec, 0)
    np.testing.assert_array_equal(shuffled, whole[order])
    parts = np.concatenate(
        [
            privacy.add_noise(values[i : i + 64], keys[i : i + 64], spec, 0)
            for i in range(0, 1000, 64)
        ]
    )
    np.testing.assert_array_equal(parts, whole)
    other_seed = privacy.add_noise(values, keys, privacy.make_spec("laplace", 1.0, None, 1.0, 4), 0)
    assert not np.allclose(other_seed, whole)
    other_output = privacy.add_noise(values, keys, spec, 1)
    assert np.corrcoef(other_output.ravel(), whole.ravel())[0, 1] < 0.05
    # the elements of one row are independent draws
    assert abs(np.corrcoef(whole[:, 0], whole[:, 1])[0, 1]) < 0.1


# --------------------------------------------------------------------------- configuration


def _args(*extra: str) -> list[str]:
    return ["--model", "m.keras", "--input", "in.parquet", "--output", "out", *extra]


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--output-noise", "laplace", "--sensitivity", "1"], "--epsilon"),
        (["--output-noise", "laplace", "--epsilon", "0", "--sensitivity", "1"], "--epsilon"),
        (["--output-noise", "laplace", "--epsilon", "inf", "--sensitivity", "1"], "--epsilon"),
        (["--output-noise", "laplace", "--epsilon", "1"], "--sensitivity"),
        (["--output-noise", "laplace", "--epsilon", "1", "--sensitivity", "-1"], "--sensitivity"),
        (
            ["--output-noise", "laplace", "--epsilon", "1", "--sensitivity", "1", "--delta", "0.1"],
            "--delta",
        ),
        (["--output-noise", "gaussian", "--epsilon", "1", "--sensitivity", "1"], "--delta"),
        (
            ["--output-noise", "gaussian", "--epsilon", "1", "--sensitivity", "1", "--delta", "1"],
            "--delta",
        ),
        (
            ["--output-noise", "gaussian", "--epsilon", "1", "--sensitivity", "1", "--delta", "0"],
            "--delta",
        ),
        (["--epsilon", "1"], "--epsilon"),
    ],
)
def test_noise_parameters_are_checked_naming_the_flag(extra, flag):
    with pytest.raises(ConfigError, match=flag):
        score.parse_args(_args(*extra))


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        (["--keep-member-predictions", "--model", "b.keras"], "keep-member-predictions"),
        (["--model", "b.keras"], "ensemble"),
        (["--mc-dropout-samples", "4"], "mc-dropout"),
        (["--shadow-model", "s.keras"], "shadow-model"),
    ],
)
def test_noise_refuses_columns_it_cannot_cover(extra, what):
    noise = ["--output-noise", "laplace", "--epsilon", "1", "--sensitivity", "1"]
    with pytest.raises(ConfigError, match=what):
        score.parse_args(_args(*noise, *extra))


def test_yaml_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model: m.keras\ninput: in.parquet\noutput: out\noutput_noise: gaussian\n"
        "epsilon: 2\ndelta: 1e-5\nsensitivity: 0.5\nseed: 7\n"
    )
    config, _, _ = score.parse_args(["--config", str(path)])
    assert (config.output_noise, config.epsilon, config.delta, config.sensitivity, config.seed) == (
        "gaussian",
        2.0,
        1e-5,
        0.5,
        7,
    )
    path.write_text("model: m.keras\ninput: in.parquet\noutput: out\nepsilon: lots\n")
    with pytest.raises(ConfigError, match="epsilon"):
        score.parse_args(["--config", str(path)])


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    table = util.feature_table(6000, N_FEATURES, seed=2)
    model = util.mlp(N_FEATURES, seed=4)
    path = str(root / "m.keras")
    model.save(path)
    raw = util.keras_reference(model, util.stacked(table, FEATURES)).reshape(-1)
    return root, table, path, util.write_parquet(root / "in.parquet", table), raw


def _score(job, out: str, **options) -> dict:
    """Scores the job's model and input into ``root/out`` (options as in util.job_argv)."""
    root, _, model, input_path, _ = job
    return util.run_score(
        root / out, model=model, input=input_path, id_column="id", **options
    ).summary


LAPLACE = {"output_noise": "laplace", "epsilon": 2, "sensitivity": 0.5, "seed": 42}


def test_cli_laplace_scale_reproducible_and_batch_size_independent(job):
    root, _, _, _, raw = job
    summary = _score(job, "a", **LAPLACE, batch_size=64)
    _score(job, "b", **LAPLACE, batch_size=1000)
    a, b = util.read_predictions(root / "a"), util.read_predictions(root / "b")
    assert a.column_names == ["id", "prediction", "model"]
    np.testing.assert_array_equal(a["prediction"].to_numpy(), b["prediction"].to_numpy())
    noise = a["prediction"].to_numpy().astype(np.float64) - raw
    assert abs(np.abs(noise).mean() - 0.25) / 0.25 < 0.05  # b = 0.5 / 2
    assert not np.isclose(a["prediction"].to_numpy(), raw, atol=1e-6).any()  # raw never written
    assert summary["output_noise"]["mechanism"] == "laplace"
    assert summary["output_noise"]["scale"] == 0.25
    assert summary["output_noise"]["epsilon"] == 2.0
    assert summary["output_noise"]["sensitivity"] == 0.5
    assert "42" not in str(summary["output_noise"]["seed"])
    assert summary["config"]["seed"] != 42
    text = (root / "a" / "run_summary.json").read_text()
    assert "42" not in "".join(part[:80] for part in text.split('"seed"')[1:])
    _score(job, "c", **{**LAPLACE, "seed": 43})
    c = util.read_predictions(root / "c")
    assert not np.allclose(c["prediction"].to_numpy(), a["prediction"].to_numpy())


def test_cli_gaussian_sigma_and_derived_columns_use_the_noisy_value(job, tmp_path, score_job):
    _root, table, _, input_path, _ = job
    model = util.mlp(N_FEATURES, outputs=3, seed=6)
    model.save(tmp_path / "c.keras")
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    summary = score_job(
        model=tmp_path / "c.keras",
        input=input_path,
        output=tmp_path / "out",
        feature_columns=",".join(FEATURES),
        output_noise="gaussian",
        epsilon=1,
        delta="1e-5",
        sensitivity=0.05,
        seed=1,
        class_names=tmp_path / "classes.txt",
        top_k=1,
        probability_columns=True,
    ).summary
    sigma = privacy.analytic_gaussian_sigma(1.0, 1e-5, 0.05)
    assert summary["output_noise"]["sigma"] == pytest.approx(sigma)
    got = util.read_predictions(tmp_path / "out", sort_by=None)  # row locator: no id column
    got = got.sort_by("row_index")
    pred = np.stack(got["prediction"].to_numpy(zero_copy_only=False))
    raw = util.keras_reference(model, util.stacked(table, FEATURES))
    assert abs((pred - raw).std() - sigma) / sigma < 0.05
    np.testing.assert_array_equal(got["prob_b"].to_numpy(), pred[:, 1])
    top = np.array(["a", "b", "c"])[np.argmax(pred, axis=1)]
    assert [t[0] for t in got["top_k_labels"].to_pylist()] == list(top)


def test_cli_bad_epsilon_is_one_error_line_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_batch_score.pipelines.cli",
            "score",
            *_args("--output-noise", "laplace", "--epsilon", "-1", "--sensitivity", "1"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.getcwd(),
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--epsilon" in lines[0]
