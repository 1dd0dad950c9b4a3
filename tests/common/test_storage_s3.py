"""Storage layer against a real S3 endpoint (moto server over HTTP) and the local filesystem."""

from __future__ import annotations

import pytest

from components.common import storage
from tests.servers import s3_client


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/prefix"


def test_roundtrip_bytes_json_list_delete(root: str) -> None:
    storage.write_bytes(storage.join(root, "a/b.bin"), b"\x00\x01payload")
    storage.write_json(storage.join(root, "c.json"), {"x": [1, 2]})
    assert storage.read_bytes(storage.join(root, "a/b.bin")) == b"\x00\x01payload"
    assert storage.read_json(storage.join(root, "c.json")) == {"x": [1, 2]}
    assert storage.size(storage.join(root, "a/b.bin")) == 9
    assert storage.list_files(root) == [storage.join(root, "a/b.bin"), storage.join(root, "c.json")]
    assert storage.list_files(root, suffix=".json") == [storage.join(root, "c.json")]
    storage.delete(storage.join(root, "a"))
    assert not storage.exists(storage.join(root, "a/b.bin"))
    assert storage.exists(storage.join(root, "c.json"))


def test_failed_atomic_write_publishes_nothing(root: str) -> None:
    target = storage.join(root, "half.bin")
    with pytest.raises(RuntimeError), storage.open_output_atomic(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("interrupted")
    assert not storage.exists(target)
    assert storage.list_files(root) == []


def test_s3_objects_visible_to_an_independent_client(s3_bucket: str, s3_env) -> None:
    storage.write_bytes(f"{s3_bucket}/k/v.txt", b"hello")
    body = s3_client(s3_env).get_object(Bucket=s3_bucket[5:], Key="k/v.txt")["Body"].read()
    assert body == b"hello"


def test_missing_object_error_names_uri(root: str) -> None:
    with pytest.raises(storage.StorageError, match="nothing-here"):
        storage.read_bytes(storage.join(root, "nothing-here"))


def test_unreachable_endpoint_fails_fast_naming_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(storage.StorageError, match="s3://bucket/key"):
        storage.read_bytes("s3://bucket/key")


def test_join_and_schemes(tmp_path) -> None:
    assert storage.join("s3://b/p/", "x", "/y") == "s3://b/p/x/y"
    assert storage.join("file:///tmp/a", "b") == "file:///tmp/a/b"
    storage.write_bytes(f"file://{tmp_path}/f.txt", b"1")
    assert (tmp_path / "f.txt").read_bytes() == b"1"
    with pytest.raises(storage.StorageError, match="unsupported scheme"):
        storage.resolve("gs://bucket/x")
    with pytest.raises(storage.StorageError, match="needs a bucket"):
        storage.resolve("s3:///x")
