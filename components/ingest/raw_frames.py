"""Reading and validating raw frames in a bounded pool of worker threads.

Every frame is fully decoded once (PIL ``load()``), which catches corrupt and truncated files
before they reach a training job. The stored bytes are the original file by default (JPEG stays
JPEG, PNG stays PNG); optionally frames are re-encoded to JPEG at a given quality.

Threads, not processes: reads (pyarrow) and Pillow's decoders release the GIL, and threads share
the storage clients and pass bytes without pickling. At most ``max_in_flight`` frames are read or
held at any time, so memory does not grow with the dataset.
"""

from __future__ import annotations

import collections
import dataclasses
import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from components.ingest.datasets.base import SourceTree

FORMATS = ("JPEG", "PNG")  # what training's decoder (components.common.images) reads

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class CheckedFrame:
    """A validated frame, or why it is corrupt (``data`` is None then)."""

    data: bytes | None
    format: str = ""  # stored format: JPEG | PNG
    error: str = ""


def validate(data: bytes, jpeg_quality: int = 0) -> CheckedFrame:
    """Decode ``data`` fully; return the bytes to store (re-encoded to JPEG when quality > 0)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            source_format = image.format or ""
            if source_format not in FORMATS:
                return CheckedFrame(None, error=f"unsupported image format {source_format or 'unknown'}")
            if not jpeg_quality:
                return CheckedFrame(data, source_format)
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=jpeg_quality)
            return CheckedFrame(out.getvalue(), "JPEG")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated or garbled data as OSError/SyntaxError/ValueError.
        return CheckedFrame(None, error=str(exc) or type(exc).__name__)


def load_frame(tree: SourceTree, path: str, jpeg_quality: int = 0) -> CheckedFrame:
    """Read and validate one frame (``path`` relative to the tree). A read failure (missing file,
    storage down) raises StorageError: that is no corrupt frame, and ``--skip-corrupt`` must not hide it."""
    return validate(tree.read(path), jpeg_quality)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int, max_in_flight: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in input order, with at most ``max_in_flight`` pending.

    ``items`` is consumed lazily. An exception from ``fn`` is raised here, in order; on exit
    (exception or the consumer stopping early) queued work is cancelled.
    """
    pending: collections.deque[Future[R]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= max_in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
