"""Dataset readers: name parsing, layout checks and the tracklets they stream, on tiny raw trees.

The ``write_*`` builders below write the real folder layouts and file names with a few tiny
images per tracklet (random pixels, so every frame's bytes differ); test_ingest*.py uses them too.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from components.ingest.datasets import ilidsvid, mars, prid2011
from components.ingest.datasets.base import LayoutError, RawSource
from tests.servers import s3_client

SIZE = (8, 16)  # width, height: tiny frames keep the tests fast


def image_bytes(rng: np.random.Generator, fmt: str = "PNG") -> bytes:
    pixels = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# MARS: {subset: {person: [(camera, tracklet, num_frames), ...]}}
MARS_TRACKLETS = {
    "train": {1: [(1, 1, 3), (2, 1, 2)], 3: [(1, 1, 2), (1, 2, 4)]},
    "test": {
        -1: [(1, 1, 2)],
        0: [(2, 1, 2)],
        2: [(1, 1, 3), (1, 2, 2), (3, 1, 2)],
        4: [(2, 1, 2), (5, 1, 3)],
        6: [(4, 1, 2)],  # one camera only: never a query
    },
}


def mars_name(person: int, camera: int, tracklet: int, frame: int) -> str:
    prefix = "00-1" if person == -1 else f"{person:04d}"
    return f"{prefix}C{camera}T{tracklet:04d}F{frame:03d}.jpg"


def write_mars(
    root: Path, tracklets: dict = MARS_TRACKLETS, *, with_info: bool = False, seed: int = 0
) -> Path:
    """The MARS layout; with_info also writes info/ as the MARS evaluation code has it."""
    rng = np.random.default_rng(seed)
    for subset, persons in tracklets.items():
        names = []
        table = []
        for person, rows in sorted(persons.items()):
            folder = "00-1" if person == -1 else f"{person:04d}"
            for camera, tracklet, length in rows:
                first = len(names) + 1
                for frame in range(1, length + 1):
                    name = mars_name(person, camera, tracklet, frame)
                    _write(root / f"bbox_{subset}" / folder / name, image_bytes(rng, "JPEG"))
                    names.append(name)
                table.append([first, len(names), person, camera])
        if with_info:
            info = root / "info"
            info.mkdir(parents=True, exist_ok=True)
            (info / f"{subset}_name.txt").write_text("\n".join(names) + "\n")
            key = f"track_{subset}_info"
            scipy.io.savemat(info / f"tracks_{subset}_info.mat", {key: np.array(table, dtype=np.float64)})
    if with_info:
        scipy.io.savemat(
            root / "info" / "query_IDX.mat", {"query_IDX": np.array([[4, 7, 8]], dtype=np.float64)}
        )
    return root


# PRID2011 / iLIDS-VID: {(person, camera 0/1): num_frames}
PRID_SEQUENCES = {
    **{(p, c): 22 + p for p in (1, 2, 3, 4, 5) for c in (0, 1)},
    (6, 0): 30,
    (6, 1): 20,  # < 21 frames in camera b: left out by the standard rule
    (7, 0): 25,  # camera a only
    (201, 0): 25,  # above 200: a different person in each camera
    (201, 1): 25,
}


def write_prid(
    root: Path,
    sequences: dict = PRID_SEQUENCES,
    *,
    cameras=("cam_a", "cam_b"),
    nest="multi_shot",
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    base = root / nest if nest else root
    for (person, camera), length in sequences.items():
        folder = base / cameras[camera] / f"person_{person:04d}"
        for frame in range(1, length + 1):
            _write(folder / f"{frame:04d}.png", image_bytes(rng))
    for camera in cameras:
        (base / camera).mkdir(parents=True, exist_ok=True)
    return root


ILIDS_PERSONS = (1, 2, 4, 7, 9, 12)  # not contiguous, like the real folders


def write_ilids(root: Path, persons=ILIDS_PERSONS, *, lengths=(3, 4), seed: int = 0, mat=None) -> Path:
    rng = np.random.default_rng(seed)
    for person in persons:
        for camera in (1, 2):
            folder = root / "i-LIDS-VID" / "sequences" / f"cam{camera}" / f"person{person:03d}"
            start = 100 * person + 7 * camera  # frame numbers do not start at 1
            for k in range(lengths[camera - 1]):
                _write(folder / f"cam{camera}_person{person:03d}_{start + 3 * k:05d}.png", image_bytes(rng))
    if mat is not None:
        path = root / ilidsvid.SPLIT_MAT
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(path, {"ls_set": np.asarray(mat, dtype=np.float64)})
    return root


def write_split_lists(directory: Path, splits: list[tuple[list[str], list[str]]], frames: int = 2) -> Path:
    """DAL split lists: per split, the person folders of train and test (ids renumbered per file)."""
    for k, (train, test) in enumerate(splits, start=1):
        for filename, folders in (("traindata.txt", train), ("testdata.txt", test)):
            lines = []
            for number, folder in enumerate(folders, start=1):
                for camera in (1, 2):
                    for frame in range(1, frames + 1):
                        lines.append(
                            f"cam{camera}/{folder}/{frame:04d}.png {number} {camera} {2 * number + camera}"
                        )
            _write(directory / f"split{k}" / filename, ("\n".join(lines) + "\n").encode())
    return directory


def tracklets(source: RawSource) -> list:
    return list(source.tracklets())


# -- name parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("0001C1T0001F001.jpg", (1, 1, 1, 1)),
        ("00-1C6T0012F123.jpg", (-1, 6, 12, 123)),
        ("0000C2T0003F1001.jpg", (0, 2, 3, 1001)),
    ],
)
def test_mars_names_parse(name: str, expected: tuple) -> None:
    parsed = mars.parse_frame_name(name, "where")
    assert (parsed.person, parsed.camera, parsed.tracklet, parsed.frame) == expected


@pytest.mark.parametrize(
    "name",
    ["0001C1T001F001.jpg", "0001C7T0001F001.jpg", "0001C0T0001F001.jpg", "x001C1T0001F001.jpg", "a.jpg"],
)
def test_mars_bad_names_are_errors_naming_the_path(name: str) -> None:
    with pytest.raises(LayoutError, match="some/dir/"):
        mars.parse_frame_name(name, f"some/dir/{name}")


def test_prid_and_ilids_names() -> None:
    assert prid2011.parse_frame_name("0042.png", "w") == 42
    assert prid2011.person_id_of("person_0147", "w") == 147
    assert ilidsvid.parse_frame_name("cam2_person129_00463.png", "w") == (2, 129, 463)
    assert ilidsvid.person_id_of("person319", "w") == 319
    for bad in ("42.png", "0042.bmp", "person_0042.png"):
        with pytest.raises(LayoutError, match="here"):
            prid2011.parse_frame_name(bad, "here")
    for bad in ("person_147", "person01"):
        with pytest.raises(LayoutError, match="here"):
            prid2011.person_id_of(bad, "here")
    for bad in ("cam3_person001_00001.png", "cam1_person1_00001.png", "cam1_person001_1.png"):
        with pytest.raises(LayoutError, match="here"):
            ilidsvid.parse_frame_name(bad, "here")


# -- MARS -------------------------------------------------------------------------------------


def test_mars_without_info_streams_name_groups_with_seeded_queries(tmp_path: Path) -> None:
    root = write_mars(tmp_path / "mars")
    (root / "synth.json").write_text("{}")  # other files at the root are ignored
    source = mars.open_source(str(root), info="auto", query_seed=0)
    items = tracklets(source)
    assert [t.name for t in items] == [
        "0001C1T0001", "0001C2T0001", "0003C1T0001", "0003C1T0002",
        "00-1C1T0001", "0000C2T0001", "0002C1T0001", "0002C1T0002", "0002C3T0001",
        "0004C2T0001", "0004C5T0001", "0006C4T0001",
    ]  # fmt: skip
    assert [t.subset for t in items] == ["train"] * 4 + ["test"] * 8
    first = items[0]
    assert (first.person_id, first.camera_id, len(first.frames)) == (1, 0, 3)
    assert first.frames[0] == "bbox_train/0001/0001C1T0001F001.jpg"
    assert items[4].person_id == -1 and items[4].frames[0].startswith("bbox_test/00-1/00-1C1T0001F")
    queries = {t.name for t in items if t.is_query}
    # one per camera of persons > 0 seen by >= 2 cameras: person 2 (cams 1, 3), person 4 (cams 2, 5)
    assert len(queries) == 4
    assert {"0002C3T0001", "0004C2T0001", "0004C5T0001"} <= queries
    assert len(queries & {"0002C1T0001", "0002C1T0002"}) == 1
    assert mars.choose_queries({1: ["a", "b"], 3: ["c"]}, 2, 0) == {
        ["a", "b"][int(np.random.default_rng([0, 2, 1]).integers(2))],
        "c",
    }
    assert [t.name for t in tracklets(source)] == [t.name for t in items]  # a fresh stream per call


def test_mars_frames_are_ordered_by_frame_number(tmp_path: Path) -> None:
    root = write_mars(tmp_path / "mars", {"train": {1: [(1, 1, 2)]}, "test": {2: [(1, 1, 1)]}})
    folder = root / "bbox_train" / "0001"
    (folder / "0001C1T0001F1000.jpg").write_bytes((folder / "0001C1T0001F001.jpg").read_bytes())
    (folder / "0001C1T0001F010.jpg").write_bytes((folder / "0001C1T0001F001.jpg").read_bytes())
    frames = tracklets(mars.open_source(str(root)))[0].frames
    assert [f.rsplit("F", 1)[1] for f in frames] == ["001.jpg", "002.jpg", "010.jpg", "1000.jpg"]


def test_mars_with_info_follows_the_tables(tmp_path: Path) -> None:
    root = write_mars(tmp_path / "mars", with_info=True)
    source = mars.open_source(str(root))
    items = tracklets(source)
    assert source.num_frames == sum(len(t.frames) for t in items) == 29
    assert [t.name for t in items][:4] == ["0001C1T0001", "0001C2T0001", "0003C1T0001", "0003C1T0002"]
    test_rows = [t for t in items if t.subset == "test"]
    # query_IDX holds rows 4, 7, 8 (1-based) of the test table
    assert [t.name for t in test_rows if t.is_query] == ["0002C1T0002", "0004C5T0001", "0006C4T0001"]
    assert "query_IDX.mat" in source.protocol["query"]
    assert not any(t.is_query for t in tracklets(mars.open_source(str(root), info="none"))[:4])
    # without the info the same tracklets come out in the same order
    assert [t.frames for t in tracklets(mars.open_source(str(root), info="none"))] == [
        t.frames for t in items
    ]


def test_mars_info_inconsistent_with_names_is_an_error(tmp_path: Path) -> None:
    root = write_mars(tmp_path / "mars", with_info=True)
    table = scipy.io.loadmat(root / "info" / "tracks_train_info.mat")["track_train_info"]
    table[1, 3] = 4  # row 2 claims camera 4; its frames say camera 2
    scipy.io.savemat(root / "info" / "tracks_train_info.mat", {"track_train_info": table})
    with pytest.raises(LayoutError, match=r"tracks_train_info.mat: row 2 \(person 1, camera 4\)"):
        mars.open_source(str(root))
    (root / "info" / "test_name.txt").unlink()
    with pytest.raises(LayoutError, match="info/test_name.txt: file not found"):
        mars.open_source(str(root))


def test_mars_layout_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="nowhere: source folder not found"):
        mars.open_source(str(tmp_path / "nowhere"))
    root = write_mars(tmp_path / "mars")
    (root / "bbox_test").rename(root / "test")
    with pytest.raises(LayoutError, match="bbox_test: required folder not found"):
        mars.open_source(str(root))
    (root / "test").rename(root / "bbox_test")
    bad = root / "bbox_test" / "0002" / "0002C1T01F001.jpg"
    bad.write_bytes(b"x")
    with pytest.raises(LayoutError, match="0002C1T01F001.jpg: not a MARS frame name"):
        tracklets(mars.open_source(str(root)))
    bad.unlink()
    (root / "bbox_test" / "0002" / "0003C1T0001F001.jpg").write_bytes(b"x")
    with pytest.raises(LayoutError, match="0003C1T0001F001.jpg: person in the name is not 0002"):
        tracklets(mars.open_source(str(root)))
    (root / "bbox_test" / "0002" / "0003C1T0001F001.jpg").unlink()
    (root / "bbox_test" / "0008").mkdir()
    with pytest.raises(LayoutError, match="0008: person folder has no frames"):
        tracklets(mars.open_source(str(root)))
    (root / "bbox_test" / "0008").rmdir()
    (root / "bbox_test" / "nobody").mkdir()
    with pytest.raises(LayoutError, match="nobody.* is not a MARS person folder"):
        tracklets(mars.open_source(str(root)))


# -- PRID2011 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cameras", "nest"), [(("cam_a", "cam_b"), "multi_shot"), (("cam_a", "cam_b"), "prid_2011/multi_shot"),
                          (("cam1", "cam2"), "")]
)  # fmt: skip
def test_prid_standard_rule_and_generated_splits(tmp_path: Path, cameras, nest) -> None:
    root = write_prid(tmp_path / "prid", cameras=cameras, nest=nest)
    source = prid2011.open_source(str(root), num_splits=4, split_seed=3)
    items = tracklets(source)
    persons = sorted({t.person_id for t in items})
    assert persons == [1, 2, 3, 4, 5]  # 6: 20 frames in camera b; 7: camera a only; 201: > 200
    assert [(t.person_id, t.camera_id) for t in items[:2]] == [(1, 0), (1, 1)]
    assert [t.is_query for t in items[:2]] == [True, False]
    assert len(items[0].frames) == 23 and items[0].frames[0] == "/".join(
        p for p in (nest, cameras[0], "person_0001", "0001.png") if p
    )
    splits = source.splits
    assert sorted(splits["split"].unique()) == [0, 1, 2, 3]
    for _, group in splits.groupby("split"):
        assert sorted(group["person_id"]) == persons
        assert (group["role"] == "train").sum() == 2  # n // 2 of 5 persons
    role0 = dict(zip(splits[splits.split == 0].person_id, splits[splits.split == 0].role, strict=True))
    assert all(t.subset == role0[t.person_id] for t in items)
    assert source.num_frames == sum(len(t.frames) for t in items)
    assert [t.person_id for t in tracklets(prid2011.open_source(str(root), min_frames=20))][-2:] == [6, 6]


def test_prid_split_lists_define_the_persons(tmp_path: Path) -> None:
    root = write_prid(tmp_path / "prid")
    lists = write_split_lists(
        tmp_path / "lists", [(["person_0001", "person_0006"], ["person_0002", "person_0003"])] * 2
    )
    source = prid2011.open_source(str(root), split_lists=str(lists))
    assert sorted({t.person_id for t in tracklets(source)}) == [1, 2, 3, 6]  # 6 kept: the lists rule
    assert sorted(source.splits[source.splits.role == "train"].person_id.unique()) == [1, 6]
    bad = write_split_lists(tmp_path / "bad", [(["person_0001"], ["person_0007"])])
    with pytest.raises(LayoutError, match="person_0007 is in the split lists but not in both cameras"):
        prid2011.open_source(str(root), split_lists=str(bad))


def test_prid_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="camera folders not found"):
        prid2011.open_source(str(write_mars(tmp_path / "mars")))
    root = write_prid(tmp_path / "prid")
    (root / "multi_shot" / "cam_a" / "person_0003" / "frame3.png").write_bytes(b"x")
    with pytest.raises(LayoutError, match="person_0003/frame3.png: not a PRID2011 frame name"):
        prid2011.open_source(str(root))
    (root / "multi_shot" / "cam_a" / "person_0003" / "frame3.png").unlink()
    (root / "multi_shot" / "cam_b" / "person_09").mkdir()
    with pytest.raises(LayoutError, match="cam_b/person_09.* is not a PRID2011 person folder"):
        prid2011.open_source(str(root))
    (root / "multi_shot" / "cam_b" / "person_09").rmdir()
    for frame in (root / "multi_shot" / "cam_b" / "person_0002").iterdir():
        frame.unlink()
    with pytest.raises(LayoutError, match="cam_b/person_0002: tracklet folder has no frames"):
        prid2011.open_source(str(root))


# -- iLIDS-VID --------------------------------------------------------------------------------


def test_ilids_reads_sequences_with_splits_from_the_mat(tmp_path: Path) -> None:
    mat = [[6, 1, 3, 2, 5, 4], [1, 2, 3, 4, 5, 6]]  # 1-based folder indices; first half: test
    root = write_ilids(tmp_path / "ilids", mat=mat)
    source = ilidsvid.open_source(str(root))
    items = tracklets(source)
    assert [t.person_id for t in items] == [p for p in ILIDS_PERSONS for _ in (0, 1)]
    assert [len(t.frames) for t in items[:2]] == [3, 4]
    assert items[1].frames[1] == "i-LIDS-VID/sequences/cam2/person001/cam2_person001_00117.png"
    assert [t.is_query for t in items[:2]] == [True, False]
    splits = source.splits
    split0 = splits[splits.split == 0]
    assert sorted(split0[split0.role == "test"].person_id) == [1, 4, 12]  # folders 6, 1, 3
    assert sorted(split0[split0.role == "train"].person_id) == [2, 7, 9]
    assert sorted(splits[(splits.split == 1) & (splits.role == "test")].person_id) == [1, 2, 4]
    assert {t.person_id: t.subset for t in items}[12] == "test"
    assert "ls_set" in source.protocol["splits"]
    generated = ilidsvid.open_source(str(write_ilids(tmp_path / "gen")), num_splits=3)
    assert generated.splits.split.nunique() == 3 and "generated" in generated.protocol["splits"]


def test_ilids_errors_name_the_path(tmp_path: Path) -> None:
    root = write_ilids(tmp_path / "ilids", mat=[[1, 2, 3, 4, 5, 6, 7]])
    with pytest.raises(LayoutError, match=r"train_test_splits_ilidsvid.mat: ls_set has shape \(1, 7\)"):
        ilidsvid.open_source(str(root))
    root = write_ilids(tmp_path / "ilids2")
    cam2 = root / "i-LIDS-VID" / "sequences" / "cam2"
    (cam2 / "person001" / "cam2_person001_00114.png").rename(cam2 / "person001" / "cam1_person001_00114.png")
    with pytest.raises(
        LayoutError, match="cam1_person001_00114.png: name says cam1/person001, folder disagrees"
    ):
        ilidsvid.open_source(str(root))
    (cam2 / "person001" / "cam1_person001_00114.png").unlink()
    (cam2 / "person002").rename(cam2 / "person003")
    with pytest.raises(LayoutError, match="cam1/person002: person not seen by cam2"):
        ilidsvid.open_source(str(root))
    with pytest.raises(LayoutError, match="camera folders not found"):
        ilidsvid.open_source(str(write_prid(tmp_path / "prid")))


# -- S3 sources -------------------------------------------------------------------------------


def upload_tree(local: Path, uri: str, server) -> None:
    """Copy a local tree to ``s3://bucket/prefix`` on the test server (one client for all files)."""
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    client = s3_client(server)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=bucket, Key=f"{prefix}/{path.relative_to(local).as_posix()}", Body=path.read_bytes()
        )


@pytest.mark.integration
def test_readers_list_an_s3_prefix_like_a_folder(tmp_path: Path, s3_bucket: str, s3_env) -> None:
    cases = [
        ("mars", write_mars(tmp_path / "mars", with_info=True), lambda r: mars.open_source(r, info="none")),
        ("mars", tmp_path / "mars", mars.open_source),
        ("prid", write_prid(tmp_path / "prid"), prid2011.open_source),
        ("ilids", write_ilids(tmp_path / "ilids", mat=[[1, 2, 3, 4, 5, 6]]), ilidsvid.open_source),
    ]
    uploaded = set()
    for name, local, reader in cases:
        uri = f"{s3_bucket}/raw/{name}"
        if name not in uploaded:
            upload_tree(local, uri, s3_env)
            uploaded.add(name)
        remote, here = reader(uri), reader(str(local))
        assert remote.root == uri
        assert tracklets(remote) == tracklets(here), name
        if here.splits is not None:
            assert remote.splits.equals(here.splits)
    with pytest.raises(LayoutError, match=f"{s3_bucket}/raw/none: source folder not found"):
        mars.open_source(f"{s3_bucket}/raw/none")
