"""The one place every step reads and writes through: local paths, ``file://`` and ``s3://``.

S3 settings come only from the standard AWS environment, never from arguments or code:
``AWS_ENDPOINT_URL`` (MinIO, moto, ...), ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (or any other source of
the AWS default credential chain) and ``AWS_MAX_ATTEMPTS`` for the SDK's own standard retry
strategy. Writes of single objects are atomic: a local file appears under its final name only
when complete (temp file + rename), and an S3 object only becomes visible when its upload ends.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from components.common.errors import DalError

DEFAULT_MAX_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0


class StorageError(DalError, OSError):
    """A storage operation failed; the message names the URI."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with ``/`` (S3 keys never use ``os.sep``)."""
    if is_s3(uri) or uri.startswith("file://"):
        result = uri.rstrip("/")
        for part in parts:
            result = f"{result}/{part.strip('/')}"
        return result
    return os.path.join(uri, *parts)


def _s3_filesystem() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    # Keyed on the pid too: the AWS SDK must not be reused across fork (DataLoader workers).
    return _cached_s3_filesystem(endpoint, region, attempts, _credentials_key(), os.getpid())


def _credentials_key() -> str:
    """A digest of the credential env vars, so a change of keys builds a new client (never logged)."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
    return hashlib.sha256("\0".join(os.environ.get(n, "") for n in names).encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _cached_s3_filesystem(
    endpoint: str, region: str, attempts: int, _credentials: str, _pid: int
) -> pafs.S3FileSystem:
    """Building an S3 client costs ~40 ms; every storage call on S3 would pay it otherwise."""
    kwargs: dict[str, Any] = {
        "region": region,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "request_timeout": REQUEST_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        # Background writes double the peak memory of an upload (one buffered part in flight).
        "background_writes": False,
    }
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem for ``uri`` and the path inside it."""
    if is_s3(uri):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri}: an S3 URI needs a bucket (s3://bucket/prefix)")
        return _s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if uri.startswith("file://"):
        uri = urlparse(uri).path
    elif "://" in uri:
        raise StorageError(f"{uri}: unsupported scheme (use a local path, file:// or s3://)")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


@contextlib.contextmanager
def _errors_name(uri: str) -> Iterator[None]:
    """Re-raise any I/O failure as a StorageError naming the URI (and never the credentials)."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"{uri}: {exc}") from exc


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    with _errors_name(uri):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def size(uri: str) -> int:
    fs, path = resolve(uri)
    with _errors_name(uri):
        info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise StorageError(f"{uri}: no such file")
    return int(info.size)


def list_files(uri: str, suffix: str = "") -> list[str]:
    """All files below ``uri`` (recursively), as URIs in the same form, sorted."""
    fs, path = resolve(uri)
    with _errors_name(uri):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return []
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    prefix = path.rstrip("/") + "/"
    rel = sorted(i.path[len(prefix) :] for i in infos if i.type == pafs.FileType.File)
    return [join(uri, r) for r in rel if r.endswith(suffix)]


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with _errors_name(uri), fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write an object atomically: readers see the old object, no object, or the whole new one."""
    with open_output_atomic(uri) as handle:
        handle.write(data)


def read_json(uri: str) -> Any:
    raw = read_bytes(uri)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc})") from exc


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")


def delete(uri: str) -> None:
    """Delete a file or a whole prefix/directory; missing is fine."""
    fs, path = resolve(uri)
    with _errors_name(uri):
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)


def ensure_dir(uri: str) -> None:
    """Create a local directory (S3 has no directories; creating one is a no-op there)."""
    if not is_s3(uri):
        fs, path = resolve(uri)
        with _errors_name(uri):
            fs.create_dir(path, recursive=True)


def open_input_file(uri: str) -> pa.NativeFile:
    """A random-access file (what Parquet readers need); the caller closes it."""
    fs, path = resolve(uri)
    with _errors_name(uri):
        return fs.open_input_file(path)


@contextlib.contextmanager
def open_output_atomic(uri: str) -> Iterator[Any]:
    """A writable binary file that publishes ``uri`` only if the block ends without an exception.

    Locally the data goes to a hidden temp file beside the target that is renamed into place.
    For S3 it is spooled to a local temp file and uploaded only after the block succeeded, so an
    exception (or a kill) part-way never leaves a partial object behind.
    """
    fs, path = resolve(uri)
    local = isinstance(fs, pafs.LocalFileSystem)
    directory = os.path.dirname(path) if local else None
    if local:
        with _errors_name(uri):
            os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if local:
                os.fsync(handle.fileno())
        with _errors_name(uri):
            if local:
                os.replace(tmp, path)
            else:
                with open(tmp, "rb") as src, fs.open_output_stream(path) as dst:
                    while chunk := src.read(8 << 20):
                        dst.write(chunk)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def sha256_of(uri: str, chunk_bytes: int = 8 << 20) -> str:
    """Streaming SHA-256 of a stored object (constant memory)."""
    fs, path = resolve(uri)
    digest = hashlib.sha256()
    with _errors_name(uri), fs.open_input_stream(path) as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def load_torch_bytes(uri: str) -> io.BytesIO:
    """An in-memory file of a stored object, for ``torch.load`` from any storage."""
    return io.BytesIO(read_bytes(uri))


def upload_file(local_path: str, uri: str) -> None:
    """Copy a local file to storage atomically, streaming (no whole-file buffer)."""
    with open(local_path, "rb") as src, open_output_atomic(uri) as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)


def download_file(uri: str, local_path: str) -> None:
    """Copy a stored object to a local file, streaming."""
    fs, path = resolve(uri)
    os.makedirs(os.path.dirname(os.path.abspath(local_path)) or ".", exist_ok=True)
    with _errors_name(uri), fs.open_input_stream(path) as src, open(local_path, "wb") as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)


def upload_tree(local_dir: str, uri: str) -> int:
    """Copy every file below a local folder to ``uri`` keeping relative paths; returns the count."""
    count = 0
    for folder, _, files in os.walk(local_dir):
        for name in sorted(files):
            path = os.path.join(folder, name)
            upload_file(path, join(uri, os.path.relpath(path, local_dir).replace(os.sep, "/")))
            count += 1
    return count
