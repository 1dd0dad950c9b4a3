"""The features.parquet format: round trip, schema, and malformed files refused with the URI named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.features import (
    FEATURES_FORMAT,
    Features,
    FeaturesError,
    read_features,
    write_features,
)


def _features(n: int = 4, dim: int = 3) -> Features:
    rng = np.random.default_rng(0)
    return Features(
        tracklet_id=np.arange(10, 10 + n),
        person_id=np.array([1, 1, 0, -1][:n]),
        camera_id=np.array([0, 1, 1, 0][:n]),
        num_frames=np.array([3, 4, 5, 6][:n]),
        feature=rng.normal(size=(n, dim)).astype(np.float32),
        metadata={"subset": "test", "split": 0},
    )


def test_round_trip_and_schema(tmp_path) -> None:
    uri = str(tmp_path / "features.parquet")
    original = _features()
    write_features(uri, original)
    schema = pq.read_schema(uri)
    assert schema.field("feature").type == pa.list_(pa.float32(), 3)
    assert schema.field("camera_id").type == pa.int16()
    back = read_features(uri)
    np.testing.assert_array_equal(back.feature, original.feature)
    for name in ("tracklet_id", "person_id", "camera_id", "num_frames"):
        np.testing.assert_array_equal(getattr(back, name), getattr(original, name))
    assert back.metadata == {"format": FEATURES_FORMAT, "subset": "test", "split": 0, "feature_dim": 3}


@pytest.mark.integration
def test_round_trip_on_s3(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/run/features.parquet"
    write_features(uri, _features())
    assert read_features(uri).feature.shape == (4, 3)


def _write_raw(path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


def test_malformed_files(tmp_path) -> None:
    with pytest.raises(FeaturesError, match="missing.parquet: features file not found"):
        read_features(str(tmp_path / "missing.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(FeaturesError, match="junk.parquet: not a readable Parquet file"):
        read_features(str(tmp_path / "junk.parquet"))
    plain = _write_raw(tmp_path / "plain.parquet", pa.table({"tracklet_id": [1]}))
    with pytest.raises(FeaturesError, match="plain.parquet: not a dal-features/1 file"):
        read_features(plain)


def test_nan_and_duplicates_refused(tmp_path) -> None:
    bad = _features()
    bad.feature[2, 1] = np.nan
    write_features(str(tmp_path / "nan.parquet"), bad)
    with pytest.raises(FeaturesError, match="nan.parquet: 1 tracklet feature.*NaN or inf.*tracklet_id 12"):
        read_features(str(tmp_path / "nan.parquet"))
    twice = _features()
    twice.tracklet_id[1] = twice.tracklet_id[0]
    write_features(str(tmp_path / "dup.parquet"), twice)
    with pytest.raises(FeaturesError, match="dup.parquet: duplicate tracklet_id"):
        read_features(str(tmp_path / "dup.parquet"))


def test_write_refuses_a_matrix_that_does_not_fit(tmp_path) -> None:
    features = _features()
    wrong = Features(**{**features.__dict__, "feature": features.feature[:2]})
    with pytest.raises(FeaturesError, match="does not fit 4 tracklets"):
        write_features(str(tmp_path / "f.parquet"), wrong)
    assert not (tmp_path / "f.parquet").exists()
