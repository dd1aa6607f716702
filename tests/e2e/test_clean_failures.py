"""Runtime problems found inside the job still end in one ``error:`` line, no traceback."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from keras_batch_score.pipelines.cli import main
from tests.util import feature_table, mlp, write_parquet


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_calibrate_with_every_label_null_is_one_error_line(tmp_path, capsys):
    table = feature_table(200, 4)
    table = table.append_column("y", pa.array([None] * 200, pa.int64()))
    data = write_parquet(tmp_path / "d.parquet", table)
    model = tmp_path / "m.keras"
    mlp(4).save(model)
    code = main(
        ["calibrate", "--model", str(model), "--input", data, "--id-column", "id",
         "--label-column", "y", "--output", str(tmp_path / "calib.json")]
    )  # fmt: skip
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1
    assert "'y'" in line and "label" in line
    assert len(line) < 400


def test_fit_preprocess_on_an_all_null_column_is_one_error_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "age": pa.array([None] * 100, pa.float64()),
            "income": pa.array(rng.normal(size=100)),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    spec = {
        "features": {
            "age": {"type": "numeric", "standardize": True},
            "income": {"type": "numeric", "standardize": True},
        }
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code = main(
        ["fit-preprocess", "--input", str(tmp_path / "d.parquet"), "--spec",
         str(tmp_path / "spec.yaml"), "--output", str(tmp_path / "fitted.yaml")]
    )  # fmt: skip
    line = _one_error_line(capsys.readouterr().err)
    assert code == 1
    assert "'age'" in line and "null" in line
    assert not (tmp_path / "fitted.yaml").exists()


def test_errors_listing_columns_cut_the_list(tmp_path, capsys, mlp3):
    """A wide input's column list is cut: first 20 names, then '… and N more'."""
    table = feature_table(50, 60)
    data = write_parquet(tmp_path / "wide.parquet", table)
    _, model = mlp3
    code = main(
        ["score", "--model", model, "--input", data, "--id-column", "id",
         "--feature-columns", "f0,f1,nope", "--output", str(tmp_path / "out")]
    )  # fmt: skip
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert "'nope'" in line and "and 41 more" in line and "f59" not in line
