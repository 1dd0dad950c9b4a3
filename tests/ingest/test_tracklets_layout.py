"""``--dataset tracklets``: users' own tracklet folders or an index file, and ``dal synth --layout
tracklets``; tiny handmade trees (16x8 frames), bad inputs fail before anything is written."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.cli import main as cli_main
from components.common import storage
from components.common.dataset import Dataset
from components.ingest import synthetic
from components.ingest.config import IngestConfig
from components.ingest.datasets import tracklets as own
from components.ingest.datasets.base import UNLABELLED, LayoutError
from components.ingest.run import run
from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_plan import plan_dataset
from components.ingest.synthetic_tracklets_layout import INDEX_FILE, label_of, tracklet_folders
from tests.ingest.test_readers import image_bytes, upload_tree

# camera -> tracklet -> frame file names, deliberately not in natural order here
TREE = {
    "cam10": {"b": ["1.jpg", "2.jpg"], "a": ["3.PNG", "1.png", "2.jpeg"]},
    "cam2": {"t10": ["10.jpg", "9.jpg", "1.jpg"], "t2": ["f2.jpg", "f10.jpg"], "t1": ["a.jpg"]},
}
# Natural order: cameras cam2 < cam10, tracklets t1 < t2 < t10, frames 1 < 9 < 10 and f2 < f10.
EXPECTED = [
    ("cam2/t1", 0, ["a.jpg"]),
    ("cam2/t2", 0, ["f2.jpg", "f10.jpg"]),
    ("cam2/t10", 0, ["1.jpg", "9.jpg", "10.jpg"]),
    ("cam10/a", 1, ["1.png", "2.jpeg", "3.PNG"]),
    ("cam10/b", 1, ["1.jpg", "2.jpg"]),
]


def write_tree(root: Path, tree: dict = TREE, seed: int = 0) -> Path:
    """The folder layout, plus what the reader must skip: hidden files and folders, top-level files."""
    rng = np.random.default_rng(seed)
    for camera, tracklets in tree.items():
        for tracklet, frames in tracklets.items():
            folder = root / camera / tracklet
            folder.mkdir(parents=True, exist_ok=True)
            for name in frames:
                fmt = "PNG" if name.lower().endswith(".png") else "JPEG"
                (folder / name).write_bytes(image_bytes(rng, fmt))
            (folder / ".DS_Store").write_bytes(b"\0")
            (folder / "._1.jpg").write_bytes(b"resource fork")
    first = next(iter(tree))
    (root / first / ".thumbs" / "x").mkdir(parents=True)
    (root / first / ".thumbs" / "x" / "notes.txt").write_text("hidden folder: skipped")
    (root / "README.txt").write_text("top-level files are no part of the layout")
    (root / ".hidden_camera").mkdir()
    return root


def config(source, output, **kwargs) -> IngestConfig:
    return IngestConfig(dataset="tracklets", source=str(source), output=str(output), progress=False, **kwargs)


def summary(source) -> list[tuple]:
    return [(t.name, t.person_id, t.camera_id, t.subset, t.is_query, t.frames) for t in source.tracklets()]


def test_natural_order() -> None:
    names = ["t10", "t2", "T1", "t1", "t01", "a", "t2b", "t2a10", "t2a9", "10", "9"]
    assert sorted(names, key=own.natural_key) == [
        "9",
        "10",
        "T1",
        "a",
        "t01",
        "t1",
        "t2",
        "t2a9",
        "t2a10",
        "t2b",
        "t10",
    ]


def test_folder_layout_is_read_in_natural_order_unlabelled(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "raw")
    source = own.open_source(str(root))
    assert source.dataset == "tracklets" and source.splits is None
    assert summary(source) == [
        (name, UNLABELLED, camera, "train", False, tuple(f"{name}/{f}" for f in frames))
        for name, camera, frames in EXPECTED
    ]
    assert source.num_frames == sum(len(f) for _, _, f in EXPECTED)
    assert source.protocol["cameras"] == {"cam2": 0, "cam10": 1}
    assert "labelled" in source.protocol["query"]


def test_folder_layout_ingests_the_original_bytes(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "raw")
    cfg = config(root, tmp_path / "ds", row_group_rows=4)
    assert run(cfg)["counts"]["frames"] == 11
    dataset = Dataset.open(cfg.output)
    dataset.verify()
    table = dataset.tracklets()
    assert table.name.tolist() == [name for name, _, _ in EXPECTED]
    assert table.camera_id.tolist() == [camera for _, camera, _ in EXPECTED]
    assert set(table.person_id) == {UNLABELLED} and set(table.subset) == {"train"}
    assert not table.is_query.any()
    frames = pd.concat(t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "image", "source_path"]))
    assert frames.source_path.tolist() == [f"{name}/{f}" for name, _, fs in EXPECTED for f in fs]
    for image, path in zip(frames.image, frames.source_path, strict=True):
        assert image == (root / path).read_bytes()
    manifest = dataset.manifest
    assert manifest["dataset"] == "tracklets"
    assert manifest["counts"]["persons"] == 0 and manifest["counts"]["test_tracklets"] == 0
    assert manifest["ingest"]["protocol"]["cameras"] == {"cam2": 0, "cam10": 1}


# -- index files --------------------------------------------------------------------------------

# Frames anywhere below the root (not the folder layout); rows in no particular order.
INDEX_ROWS = [
    # path, camera, tracklet, frame, person, subset
    ("x/c1-7-b.jpg", "c1", "7", "20", "10", ""),
    ("x/c1-7-a.jpg", "c1", "7", "3", "10", ""),
    ("x/c1-8.jpg", "c1", "8", "1", "", ""),
    ("y/c1-9.jpg", "c1", "9", "0", "NaN", ""),
    ("y/c1-10.png", "c1", "10", "5", "bob", "train"),  # labelled, but trains DAL (the subset column)
    ("x/c2-7.jpg", "c2", "7", "1", "2", ""),  # tracklet 7 of another camera: another tracklet
    ("x/c2-1.jpg", "c2", "1", "-4", "", "TRAIN"),
    ("x/c2-2a.jpg", "c2", "2", "2", "", " Train "),
    ("x/c2-2b.jpg", "c2", "2", "1", "", "train"),
    ("x/c2-3.jpg", "c2", "3", "1", "", "test"),  # unlabelled test: evaluation ignores it
]
INDEX_EXPECTED = [
    # name, person_id (labels 2 < 10 < bob), camera_id, subset, frames (by frame number)
    ("c1/7", 2, 0, "test", ("x/c1-7-a.jpg", "x/c1-7-b.jpg")),
    ("c1/8", UNLABELLED, 0, "train", ("x/c1-8.jpg",)),
    ("c1/9", UNLABELLED, 0, "train", ("y/c1-9.jpg",)),
    ("c1/10", 3, 0, "train", ("y/c1-10.png",)),
    ("c2/1", UNLABELLED, 1, "train", ("x/c2-1.jpg",)),
    ("c2/2", UNLABELLED, 1, "train", ("x/c2-2b.jpg", "x/c2-2a.jpg")),
    ("c2/3", UNLABELLED, 1, "test", ("x/c2-3.jpg",)),
    ("c2/7", 1, 1, "test", ("x/c2-7.jpg",)),
]
COLUMNS = ("path", "camera", "tracklet", "frame", "person", "subset")


def write_frames_for(root: Path, paths, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(image_bytes(rng, "PNG" if path.endswith(".png") else "JPEG"))
    return root


def write_csv(path: Path, rows, columns=COLUMNS) -> Path:
    def cell(value: str) -> str:
        return f'"{value}"' if "," in value else value

    lines = [",".join(columns), *(",".join(cell(str(v)) for v in row) for row in rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def index_tree(root: Path, rows=INDEX_ROWS) -> Path:
    return write_frames_for(root, [row[0] for row in rows])


def test_index_csv_with_labels_frames_and_subsets(tmp_path: Path) -> None:
    root = index_tree(tmp_path / "raw")
    index = write_csv(tmp_path / "index.csv", INDEX_ROWS)
    source = own.open_source(str(root), index=str(index))
    assert summary(source) == [(n, p, c, s, False, f) for n, p, c, s, f in INDEX_EXPECTED]
    assert source.num_frames == len(INDEX_ROWS)
    assert source.protocol["persons"] == {"2": 1, "10": 2, "bob": 3}
    assert source.protocol["cameras"] == {"c1": 0, "c2": 1}
    assert source.protocol["frame_order"] == "the frame column"

    cfg = config(root, tmp_path / "ds", index=str(index))
    run(cfg)
    dataset = Dataset.open(cfg.output)
    table = dataset.tracklets()
    assert table.name.tolist() == [e[0] for e in INDEX_EXPECTED]
    assert table.person_id.tolist() == [e[1] for e in INDEX_EXPECTED]
    assert table.subset.tolist() == [e[3] for e in INDEX_EXPECTED]
    # Labelled: c1/7 and c2/7 (test), c1/10 (train): three persons in the manifest.
    assert dataset.manifest["counts"]["persons"] == 3
    assert dataset.manifest["ingest"]["protocol"]["persons"] == {"2": 1, "10": 2, "bob": 3}
    assert dataset.manifest["ingest"]["config"]["index"] == str(index)


def test_gzipped_csv_index_and_the_cli(tmp_path: Path, capsys) -> None:
    root = index_tree(tmp_path / "raw")
    plain = write_csv(tmp_path / "index.csv", INDEX_ROWS)
    packed = tmp_path / "index.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert summary(own.open_source(str(root), index=str(packed))) == summary(
        own.open_source(str(root), index=str(plain))
    )
    args = ["ingest", "--dataset", "tracklets", "--source", str(root), "--progress", "false"]
    assert cli_main([*args, "--index", str(packed), "--output", str(tmp_path / "ds")]) == 0
    assert Dataset.open(str(tmp_path / "ds")).tracklets().name.tolist() == [e[0] for e in INDEX_EXPECTED]
    bad = write_csv(tmp_path / "bad.csv", _replace(INDEX_ROWS, {6: {"subset": "val"}}))
    assert cli_main([*args, "--index", str(bad), "--output", str(tmp_path / "ds2")]) == 2
    assert f"{bad}: row 7: subset 'val' is not train or test" in capsys.readouterr().err
    assert not (tmp_path / "ds2").exists()


def test_without_a_frame_column_the_row_order_is_the_frame_order(tmp_path: Path) -> None:
    root = index_tree(tmp_path / "raw")
    rows = [(p, c, t) for p, c, t, *_ in INDEX_ROWS]
    source = own.open_source(str(root), index=str(write_csv(tmp_path / "i.csv", rows, COLUMNS[:3])))
    by_name = {t.name: t for t in source.tracklets()}
    assert by_name["c1/7"].frames == ("x/c1-7-b.jpg", "x/c1-7-a.jpg")  # the rows' order
    assert by_name["c2/2"].frames == ("x/c2-2a.jpg", "x/c2-2b.jpg")
    assert {t.person_id for t in by_name.values()} == {UNLABELLED}
    assert {t.subset for t in by_name.values()} == {"train"}
    assert source.protocol["frame_order"] == "the row order of the index"


def test_parquet_index_with_integer_names_and_nan_labels_reads_as_the_csv(tmp_path: Path) -> None:
    """pandas writes an integer column with gaps as float with NaN: labels 2.0 / 10.0 / NaN."""
    rows = [
        (f"f/{c}-{t}-{f}.jpg", c, t, f, p, s)
        for c, t, f, p, s in [
            (1, 7, 3, 10.0, None),
            (1, 7, 1, 10.0, None),
            (1, 8, 1, None, None),
            (1, 9, 1, None, "train"),
            (2, 7, 1, 2.0, None),
            (2, 1, 1, None, None),
            (2, 2, 1, None, None),
        ]
    ]
    root = write_frames_for(tmp_path / "raw", [r[0] for r in rows])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    assert frame.person.dtype == np.float64
    frame.to_parquet(tmp_path / "index.parquet")
    as_text = [tuple("" if pd.isna(v) else int(v) if isinstance(v, float) else v for v in r) for r in rows]
    csv = write_csv(tmp_path / "index.csv", as_text)
    from_parquet = own.open_source(str(root), index=str(tmp_path / "index.parquet"))
    from_csv = own.open_source(str(root), index=str(csv))
    assert summary(from_parquet) == summary(from_csv)
    assert [t.name for t in from_parquet.tracklets()] == ["1/7", "1/8", "1/9", "2/1", "2/2", "2/7"]
    assert from_parquet.protocol["persons"] == {"2": 1, "10": 2}
    assert next(from_parquet.tracklets()).frames == ("f/1-7-1.jpg", "f/1-7-3.jpg")


def test_index_of_a_folder_tree_keeps_leading_zeros_of_names(tmp_path: Path) -> None:
    """CSV names are text: tracklet ``007`` stays ``007`` (no integer inference)."""
    root = write_tree(
        tmp_path / "raw", {"01": {"007": ["1.jpg"], "8": ["1.jpg"]}, "02": {"1": ["1.jpg"], "2": ["1.jpg"]}}
    )
    rows = [(f"{c}/{t}/1.jpg", c, t) for c, t in [("01", "007"), ("01", "8"), ("02", "1"), ("02", "2")]]
    source = own.open_source(str(root), index=str(write_csv(tmp_path / "i.csv", rows, COLUMNS[:3])))
    assert [t.name for t in source.tracklets()] == ["01/007", "01/8", "02/1", "02/2"]
    assert source.protocol["cameras"] == {"01": 0, "02": 1}


# -- bad input: a LayoutError naming the file / row / column, and nothing written ------------------


def _replace(rows, changes: dict[int, dict[str, str]]):
    """``rows`` with the given cells changed: {row index: {column: value}}."""
    rows = [list(r) for r in rows]
    for index, values in changes.items():
        for key, value in values.items():
            rows[index][COLUMNS.index(key)] = value
    return [tuple(r) for r in rows]


def _index_case(rows, columns=COLUMNS, make_frames=True):
    def build(tmp_path: Path) -> tuple[Path, str]:
        root = tmp_path / "raw"
        root.mkdir()
        if make_frames:
            write_frames_for(root, [r[0] for r in INDEX_ROWS])
        return root, str(write_csv(tmp_path / "index.csv", rows, columns))

    return build


def _tree_case(change):
    def build(tmp_path: Path) -> tuple[Path, str]:
        root = write_tree(tmp_path / "raw")
        change(root)
        return root, ""

    return build


BAD_INDEX = {
    "missing columns": (
        _index_case([r[:2] for r in INDEX_ROWS], ("path", "cam")),
        r"index.csv: missing column\(s\) camera, tracklet \(required: path, camera, tracklet; "
        r".*found: path, cam\)",
    ),
    "frame listed twice": (
        _index_case(_replace(INDEX_ROWS, {2: {"path": "x/c1-7-b.jpg"}})),
        r"index.csv: rows 1 and 3 list the same frame 'x/c1-7-b.jpg'",
    ),
    "duplicate frame numbers": (
        _index_case(_replace(INDEX_ROWS, {0: {"frame": "3"}})),
        r"index.csv: rows 1 and 2: frame 3 appears twice in tracklet c1/7 \(column frame\)",
    ),
    "non-integer frame": (
        _index_case(_replace(INDEX_ROWS, {3: {"frame": "2.5"}})),
        r"index.csv: row 4: frame is '2.5', not an integer \(column frame\)",
    ),
    "empty frame": (
        _index_case(_replace(INDEX_ROWS, {5: {"frame": ""}})),
        r"index.csv: row 6: frame is empty, not an integer",
    ),
    "unknown subset": (
        _index_case(_replace(INDEX_ROWS, {6: {"subset": "val"}})),
        r"index.csv: row 7: subset 'val' is not train or test",
    ),
    "empty camera": (
        _index_case(_replace(INDEX_ROWS, {4: {"camera": ""}})),
        r"index.csv: row 5: empty camera",
    ),
    "missing frame file": (
        _index_case(_replace(INDEX_ROWS, {8: {"path": "x/gone.jpg"}})),
        r"raw/x/gone.jpg: frame file not found \(row 9 of .*index.csv; paths are relative to the "
        r"source root\)",
    ),
    "path outside the root": (
        _index_case(_replace(INDEX_ROWS, {1: {"path": "x/../../c1-7-a.jpg"}})),
        r"index.csv: row 2: path 'x/../../c1-7-a.jpg' must be relative to the source root",
    ),
    "absolute path": (
        _index_case(_replace(INDEX_ROWS, {0: {"path": "/etc/c1.jpg"}})),
        r"index.csv: row 1: path '/etc/c1.jpg' must be relative",
    ),
    "non-image path": (
        _index_case(_replace(INDEX_ROWS, {2: {"path": "x/notes.txt"}})),
        r"index.csv: row 3: path 'x/notes.txt' is not an image file",
    ),
    "labels disagree in a tracklet": (
        _index_case(_replace(INDEX_ROWS, {1: {"person": "11"}})),
        r"index.csv: rows 1 and 2 of tracklet c1/7 disagree on person \('10' vs '11'; one value per "
        r"tracklet\)",
    ),
    "subsets disagree in a tracklet": (
        _index_case(_replace(INDEX_ROWS, {7: {"subset": "test"}})),
        r"index.csv: rows 8 and 9 of tracklet c2/2 disagree on subset \('test' vs 'train'",
    ),
    "every tracklet labelled, no subset column": (
        _index_case([(*r[:4], f"p-{r[1]}-{r[2]}") for r in INDEX_ROWS], COLUMNS[:5]),
        r"index.csv: no train tracklets \(every tracklet is labelled.*add a subset column",
    ),
    "every tracklet test": (
        _index_case([(*r[:5], "test") for r in INDEX_ROWS]),
        r"index.csv: no train tracklets \(the subset column marks every tracklet test\)",
    ),
    "camera with one train tracklet": (
        _index_case(_replace(INDEX_ROWS, {7: {"subset": "test"}, 8: {"subset": "test"}})),
        r"index.csv: camera 'c2' has 1 train tracklet\(s\)",
    ),
    "one camera": (
        _index_case([r for r in INDEX_ROWS if r[1] == "c1"]),
        r"index.csv: DAL needs tracklets from at least 2 cameras, found 1 \(c1\)",
    ),
    "no rows": (_index_case([]), r"index.csv: the index has no rows"),
}


def _remove_frames(relative: str):
    """Remove a tracklet's frames, keeping its hidden files."""

    def change(root: Path) -> None:
        for path in (root / relative).iterdir():
            if not path.name.startswith("."):
                path.unlink()

    return change


def _add_file(relative: str):
    def change(root: Path) -> None:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"")

    return change


BAD_TREE = {
    "camera folder without tracklets": (
        _tree_case(lambda root: (root / "cam3").mkdir()),
        r"raw/cam3: camera folder has no tracklet folders",
    ),
    "tracklet folder without frames": (
        _tree_case(_remove_frames("cam2/t2")),
        r"raw/cam2/t2: tracklet folder has no image files",
    ),
    "sub-folder in a tracklet": (
        _tree_case(lambda root: (root / "cam2" / "t2" / "more").mkdir()),
        r"raw/cam2/t2/more: unexpected folder in a tracklet folder",
    ),
    "sub-folder with frames in a tracklet": (
        _tree_case(_add_file("cam10/b/c/1.jpg")),
        r"raw/cam10/b/c: unexpected folder in a tracklet folder",
    ),
    "non-image file": (
        _tree_case(_add_file("cam10/a/labels.txt")),
        r"raw/cam10/a/labels.txt: not an image file \(frames are .jpg, .jpeg or .png; hidden files "
        r"are skipped\)",
    ),
    "file in a camera folder": (
        _tree_case(_add_file("cam2/1.jpg")),
        r"raw/cam2/1.jpg: unexpected file in a camera folder",
    ),
    "camera with one tracklet": (
        _tree_case(_add_file("cam3/only/1.jpg")),
        r"raw: camera 'cam3' has 1 train tracklet\(s\); DAL needs at least 2",
    ),
}


def _no_cameras(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "raw"
    (root / ".hidden").mkdir(parents=True)
    (root / "README.txt").write_text("top-level files are no camera")
    return root, ""


BAD_OTHER = {
    "missing root": (lambda tmp_path: (tmp_path / "nope", ""), r"nope: source folder not found"),
    "no camera folders": (_no_cameras, r"raw: no camera folders \(expected <camera>/<tracklet>/<frame>.jpg"),
    "missing index": (
        lambda tmp_path: (write_tree(tmp_path / "raw"), str(tmp_path / "gone.csv")),
        r"gone.csv: index file not found",
    ),
    "unknown index format": (
        lambda tmp_path: (
            write_tree(tmp_path / "raw"),
            str(write_csv(tmp_path / "index.txt", INDEX_ROWS)),
        ),
        r"index.txt: unknown index format \(use a .csv, .csv.gz or .parquet file\)",
    ),
    "one camera folder": (
        lambda tmp_path: (write_tree(tmp_path / "raw", {"cam1": TREE["cam2"]}), ""),
        r"raw: DAL needs tracklets from at least 2 cameras, found 1 \(cam1\)",
    ),
}
BAD = {**BAD_INDEX, **BAD_TREE, **BAD_OTHER}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_fault_and_writes_nothing(tmp_path: Path, case: str) -> None:
    build, message = BAD[case]
    root, index = build(tmp_path)
    output = tmp_path / "ds"
    with pytest.raises(LayoutError, match=message):
        run(config(root, output, index=index))
    assert not output.exists()  # the reader failed before the writer touched the output


def test_the_good_cases_of_the_bad_ones_pass(tmp_path: Path) -> None:
    """The fixtures the bad cases change are valid as they are (so each case tests its change)."""
    root = index_tree(tmp_path / "raw")
    own.open_source(str(root), index=str(write_csv(tmp_path / "index.csv", INDEX_ROWS)))
    own.open_source(str(write_tree(tmp_path / "tree")))


# -- S3 ----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_s3_source_and_index_read_like_local_ones(tmp_path: Path, s3_bucket: str, s3_env) -> None:
    local = write_tree(tmp_path / "tree")
    index_local = index_tree(tmp_path / "indexed")
    write_csv(index_local / "meta" / "index.csv", INDEX_ROWS)
    pq.write_table(
        pa.table({c: [r[i] for r in INDEX_ROWS] for i, c in enumerate(COLUMNS)}),
        index_local / "meta" / "i.parquet",
    )
    upload_tree(local, f"{s3_bucket}/tree", s3_env)
    upload_tree(index_local, f"{s3_bucket}/indexed", s3_env)

    remote = own.open_source(f"{s3_bucket}/tree")
    assert summary(remote) == summary(own.open_source(str(local)))
    assert remote.root == f"{s3_bucket}/tree"
    here = summary(own.open_source(str(index_local), index=str(index_local / "meta" / "index.csv")))
    for name in ("index.csv", "i.parquet"):
        there = own.open_source(f"{s3_bucket}/indexed", index=f"{s3_bucket}/indexed/meta/{name}")
        assert summary(there) == here

    # S3: a missing first frame fails up front; a later one fails the ingest when it is read.
    rows = _replace(INDEX_ROWS, {0: {"path": "x/gone.jpg"}})
    storage.write_bytes(f"{s3_bucket}/indexed/bad1.csv", write_csv(tmp_path / "b1.csv", rows).read_bytes())
    with pytest.raises(LayoutError, match=r"indexed/x/gone.jpg: frame file not found \(row 1 of"):
        own.open_source(f"{s3_bucket}/indexed", index=f"{s3_bucket}/indexed/bad1.csv")
    rows = _replace(INDEX_ROWS, {8: {"path": "x/gone.jpg"}})
    storage.write_bytes(f"{s3_bucket}/indexed/bad9.csv", write_csv(tmp_path / "b9.csv", rows).read_bytes())
    cfg = config(f"{s3_bucket}/indexed", f"{s3_bucket}/ds-bad", index=f"{s3_bucket}/indexed/bad9.csv")
    with pytest.raises(storage.StorageError, match=r"indexed/x/gone.jpg"):
        run(cfg)
    assert not storage.exists(f"{s3_bucket}/ds-bad/manifest.json")

    cfg = config(f"{s3_bucket}/tree", f"{s3_bucket}/ds", workers=2)
    assert run(cfg)["counts"]["frames"] == 11
    frames = pd.concat(t.to_pandas() for t in Dataset.open(cfg.output).iter_frames(["image", "source_path"]))
    for image, path in zip(frames.image, frames.source_path, strict=True):
        assert image == (local / path).read_bytes()


@pytest.mark.integration
@pytest.mark.parametrize(
    "change, message",
    [
        (_add_file("cam2/t2/more/1.jpg"), "tree/cam2/t2/more: unexpected folder in a tracklet folder"),
        # S3 has no empty folders; a tracklet "folder" with hidden files only is still one.
        (_remove_frames("cam2/t2"), "tree/cam2/t2: tracklet folder has no image files"),
        (_add_file("cam10/a/labels.txt"), "tree/cam10/a/labels.txt: not an image file"),
    ],
)
def test_s3_folder_errors_name_the_object(tmp_path: Path, s3_bucket: str, s3_env, change, message) -> None:
    local = write_tree(tmp_path / "tree")
    change(local)
    upload_tree(local, f"{s3_bucket}/tree", s3_env)
    with pytest.raises(LayoutError, match=re.escape(f"{s3_bucket}/{message}")):
        own.open_source(f"{s3_bucket}/tree")


# -- dal synth --layout tracklets ------------------------------------------------------------------

SYNTH = {
    "layout": "tracklets",
    "image_height": 32,
    "image_width": 16,
    "num_identities": 6,
    "num_cameras": 3,
    "num_distractors": 2,
    "frames_per_tracklet": (3, 12),
}
FILE = re.compile(r"^cam([1-3])/track([1-9][0-9]*)/([1-9][0-9]*)\.jpg$")


def files_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_synthetic_layout_round_trip(tmp_path: Path) -> None:
    cfg = SynthConfig(output=str(tmp_path / "raw"), **SYNTH)
    summary_ = synthetic.run(cfg)
    root = Path(summary_["output"])
    plan = plan_dataset(cfg.planned)
    folders = tracklet_folders(cfg.planned, plan)
    frames = [f for f in files_of(root) if f not in (INDEX_FILE, "synth.json")]
    assert all(FILE.match(f) for f in frames)
    assert len(frames) == summary_["frames"] == sum(len(t.numbers) for t in plan.tracklets)
    assert sorted(frames) == sorted(f"{folders[t]}/{n}.jpg" for t in plan.tracklets for n in t.numbers)
    with Image.open(root / frames[0]) as image:
        assert (image.format, image.size) == ("JPEG", (16, 32))
    assert any(len(t.numbers) >= 10 for t in plan.tracklets)  # frames 1..9 and 10..: natural order

    # The folders alone (--index none: the index beside them ignored): every tracklet unlabelled, train.
    folder_cfg = config(root, tmp_path / "ds-folders", index="none")
    run(folder_cfg)
    folder_set = Dataset.open(folder_cfg.output)
    unlabelled = folder_set.tracklets()
    assert len(unlabelled) == len(plan.tracklets)
    assert set(unlabelled.person_id) == {UNLABELLED} and set(unlabelled.subset) == {"train"}
    stored = pd.concat(t.to_pandas() for t in folder_set.iter_frames(["image", "source_path"]))
    for image, path in zip(stored.image, stored.source_path, strict=True):
        assert image == (root / path).read_bytes()

    # dal ingest --source S finds S/index.csv: the MARS test persons are the labelled, held-out subset.
    index_cfg = config(root, tmp_path / "ds-index")
    run(index_cfg)
    dataset = Dataset.open(index_cfg.output)
    assert dataset.manifest["ingest"]["protocol"]["layout"] == f"index {root / INDEX_FILE}"
    assert dataset.tracklets().name.tolist() == unlabelled.name.tolist()
    labelled = dataset.tracklets().set_index("name")
    by_folder = {folders[t]: t for t in plan.tracklets}
    labels = sorted({label_of(t) for t in plan.tracklets} - {None})
    assert labels == [t for t in range(2, 7, 2)]  # MARS: even ids test
    for name, row in labelled.iterrows():
        tracklet = by_folder[name]
        label = label_of(tracklet)
        assert row.person_id == (labels.index(label) + 1 if label else UNLABELLED)
        assert row.subset == ("test" if label else "train")
        assert row.camera_id == tracklet.camera - 1
        assert row.num_frames == len(tracklet.numbers)
    assert (labelled.person_id > 0).sum() == sum(
        1 for t in plan.tracklets if t.subset == "bbox_test" and t.person > 0
    )
    frames_table = pd.concat(
        t.to_pandas() for t in dataset.iter_frames(["tracklet_id", "frame_index", "source_path"])
    )
    names = dataset.tracklets().set_index("tracklet_id").name
    for tracklet_id, group in frames_table.groupby("tracklet_id"):
        numbers = by_folder[names[tracklet_id]].numbers
        assert group.source_path.tolist() == [f"{names[tracklet_id]}/{n}.jpg" for n in numbers]


def test_synthetic_layout_is_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    def digests(workers: int, name: str) -> dict[str, str]:
        root = Path(
            synthetic.run(SynthConfig(output=str(tmp_path / name), workers=workers, **SYNTH))["output"]
        )
        return {
            f: hashlib.sha256((root / f).read_bytes()).hexdigest()
            for f in files_of(root)
            if f != "synth.json"
        }

    one = digests(1, "a")
    assert digests(2, "b") == one
    other_seed = synthetic.run(SynthConfig(output=str(tmp_path / "c"), seed=1, **SYNTH))
    assert (Path(other_seed["output"]) / INDEX_FILE).read_bytes() != (
        tmp_path / "a" / INDEX_FILE
    ).read_bytes()
