"""``dal synth``: real layouts and names, determinism, the appearance model, the real structure."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.common.config import ConfigError
from components.common.errors import DalError
from components.ingest import synthetic, synthetic_encode
from components.ingest.datasets.reference import load_mars_info, read_split_list, split_list_tracklets
from components.ingest.synthetic_camera import camera_sprites, camera_view
from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_names import mars_person
from components.ingest.synthetic_person import Identity, render_sprites, sample_identity
from components.ingest.synthetic_plan import plan_dataset
from components.ingest.synthetic_random import KEY_IDENTITY, keyed_rng
from components.ingest.synthetic_tracklets import plan_counts

REPO = Path(__file__).resolve().parents[2]
TINY = {"image_height": 32, "image_width": 16}

MARS_FILE = re.compile(r"^bbox_(train|test)/(\d{4}|00-1)/(\d{4}|00-1)C([1-6])T(\d{4})F(\d{3})\.jpg$")
PRID_FILE = re.compile(r"^cam_([ab])/person_(\d{4})/(\d{4})\.png$")
ILIDS_FILE = re.compile(r"^sequences/cam([12])/person(\d{3})/cam\1_person\2_(\d{5})\.png$")


def synth(tmp_path: Path, name: str = "out", **kwargs) -> tuple[Path, dict]:
    values = {**TINY, "frames_per_tracklet": (3, 5), **kwargs}
    output = tmp_path / name
    summary = synthetic.run(SynthConfig(output=str(output), **values))
    return output, summary


def files_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def image_files(root: Path) -> list[str]:
    return [f for f in files_of(root) if f != synthetic.SYNTH_JSON and not f.startswith("info/")]


def digests(root: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}


def read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Layouts and naming


def test_mars_layout_names_every_file_and_info_is_consistent(tmp_path: Path) -> None:
    root, summary = synth(tmp_path, layout="mars", num_identities=6, num_cameras=3, num_distractors=2)
    names = image_files(root)
    tracklets: dict[tuple[str, str, int, int], list[int]] = collections.defaultdict(list)
    for name in names:
        match = MARS_FILE.match(name)
        assert match, name
        subset, folder, person, camera, number, frame = match.groups()
        assert folder == person
        person_id = -1 if person == "00-1" else int(person)
        assert int(camera) <= 3
        if subset == "train":
            assert person_id > 0 and person_id % 2 == 1  # odd ids train, as in MARS
        else:
            assert person_id <= 0 or person_id % 2 == 0
        tracklets[(subset, person, int(camera), int(number))].append(int(frame))
        assert Image.open(root / name).size == (16, 32)
    for frames in tracklets.values():
        assert sorted(frames) == list(range(1, len(frames) + 1))
        assert 3 <= len(frames) <= 5
    persons = {p for (_, p, _, _) in tracklets}
    assert {"00-1", "0000"} <= persons
    assert len(persons - {"00-1", "0000"}) == 6 == summary["persons"]
    assert summary["frames"] == len(names) and summary["tracklets"] == len(tracklets)
    assert sum(1 for key in tracklets if key[1] == "0000") == 2 == summary["distractor_tracklets"]
    assert json.loads((root / "synth.json").read_text())["counts"]["frames"] == len(names)

    # info/: rows index 1-based into the name lists; one query per test person and camera.
    info = load_mars_info(root / "info")
    for subset, table in (("train", info.train), ("test", info.test)):
        listed = (root / "info" / f"{subset}_name.txt").read_text().split()
        assert (
            sorted(listed) == listed == sorted(os.path.basename(n) for n in names if f"bbox_{subset}/" in n)
        )
        assert table[0, 0] == 1 and table[-1, 1] == len(listed)
        assert (table[1:, 0] == table[:-1, 1] + 1).all()
        for first, last, person, camera in table.tolist():
            parsed = [MARS_FILE.match(f"bbox_{subset}/{n[:4]}/{n}") for n in listed[first - 1 : last]]
            assert {(m.group(3), m.group(4)) for m in parsed} == {(mars_person(person), str(camera))}
            assert len({m.group(5) for m in parsed}) == 1  # one tracklet per row
        assert len(table) == sum(1 for key in tracklets if key[0] == subset)
    queries = info.test[info.query_rows]
    assert (queries[:, 2] > 0).all()
    cells = {(p, c) for _, _, p, c in info.test.tolist() if p > 0}
    assert sorted(map(tuple, queries[:, 2:].tolist())) == sorted(cells)


def test_prid2011_layout_has_shared_and_single_camera_persons(tmp_path: Path) -> None:
    root, summary = synth(tmp_path, layout="prid2011", num_identities=3, num_distractors=1)
    persons: dict[str, set[int]] = {"a": set(), "b": set()}
    frames: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    for name in image_files(root):
        match = PRID_FILE.match(name)
        assert match, name
        persons[match.group(1)].add(int(match.group(2)))
        frames[(match.group(1), int(match.group(2)))].append(int(match.group(3)))
    assert persons == {"a": {1, 2, 3, 201}, "b": {1, 2, 3, 201, 202}}  # solo persons from 201, as the release
    assert all(sorted(f) == list(range(1, len(f) + 1)) for f in frames.values())
    assert summary["persons"] == 3 + 1 + 2 and summary["cameras"] == 2
    image = Image.open(root / "cam_a" / "person_0001" / "0001.png")
    assert image.format == "PNG" and image.size == (16, 32) and image.mode == "RGB"
    assert not (root / "info").exists()  # info/ is MARS's alone


def test_ilidsvid_layout_numbers_frames_from_a_start(tmp_path: Path) -> None:
    root, _ = synth(tmp_path, layout="ilidsvid", num_identities=3)
    frames: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for name in image_files(root):
        match = ILIDS_FILE.match(name)
        assert match, name
        frames[(match.group(1), match.group(2))].append(int(match.group(3)))
    assert sorted(frames) == [(c, f"{p:03d}") for c in "12" for p in (1, 2, 3)]
    for numbers in frames.values():
        assert sorted(numbers) == list(range(min(numbers), min(numbers) + len(numbers)))
    assert any(min(numbers) != 1 for numbers in frames.values())


def test_png_encoder_is_lossless() -> None:
    rng = np.random.default_rng(3)
    for shape in ((32, 16, 3), (17, 9, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        decoded = np.asarray(Image.open(io.BytesIO(synthetic_encode.encode_png(image))))
        np.testing.assert_array_equal(decoded, image)


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    options = {"layout": "mars", "num_identities": 4, "num_cameras": 2, "num_distractors": 1}
    first, _ = synth(tmp_path, "a", **options)
    again, _ = synth(tmp_path, "b", workers=2, **options)  # processes do not change the output
    other, _ = synth(tmp_path, "c", seed=1, **options)
    names = [n for n in files_of(first) if n != synthetic.SYNTH_JSON]
    assert files_of(again) == files_of(first)
    assert digests(again, names) == digests(first, names)
    shared = sorted(set(names) & set(files_of(other)))
    changed = [n for n in shared if digests(first, [n]) != digests(other, [n])]
    assert len(changed) > 0.9 * len(shared)


def test_random_keys_do_not_collide() -> None:
    keys = [(11, 1), (11, 1, 0), (11,), (11, 0), (1, 11)]
    draws = {key: keyed_rng(0, *key).random() for key in keys}
    assert len(set(draws.values())) == len(draws)
    assert keyed_rng(1, 11, 1).random() != draws[(11, 1)]


def test_a_subset_of_identities_renders_the_same_bytes(tmp_path: Path) -> None:
    small, _ = synth(tmp_path, "small", layout="ilidsvid", num_identities=2)
    big, _ = synth(tmp_path, "big", layout="ilidsvid", num_identities=4)
    names = image_files(small)
    assert set(names) < set(image_files(big))
    assert digests(small, names) == digests(big, names)


# ---------------------------------------------------------------------------------------------
# Appearance model


def test_identity_is_stable_and_cameras_recolour_it() -> None:
    identity = sample_identity(keyed_rng(0, KEY_IDENTITY, 7))
    other = sample_identity(keyed_rng(0, KEY_IDENTITY, 8))
    assert identity == sample_identity(keyed_rng(0, KEY_IDENTITY, 7))
    assert identity != other

    def person_colour(cast: float, camera: int, who: Identity) -> np.ndarray:
        view = camera_view(0, camera, 64, 32, cast, 0.5, 0.0)
        sprites = camera_sprites(render_sprites(who, False, 64), view, 64)
        return sprites.colour[:-1].sum(0) / sprites.alpha[:-1].sum()  # mean colour of the person

    # Without colour cast the person keeps its colours in every camera; with it they shift.
    plain = [person_colour(0.0, camera, identity) for camera in (1, 2, 3)]
    cast = [person_colour(1.0, camera, identity) for camera in (1, 2, 3)]
    spread_plain = max(np.abs(a - b).max() for a in plain for b in plain)
    spread_cast = max(np.abs(a - b).max() for a in cast for b in cast)
    assert spread_plain < 0.02
    assert spread_cast > 0.08
    view = camera_view(0, 1, 64, 32, 0.0, 0.5, 0.0)
    assert not np.allclose(
        camera_sprites(render_sprites(identity, False, 64), view, 64).colour,
        camera_sprites(render_sprites(other, False, 64), view, 64).colour,
    )


def test_frames_correlate_more_within_a_camera_than_across(tmp_path: Path) -> None:
    root, _ = synth(
        tmp_path, layout="ilidsvid", num_identities=4, frames_per_tracklet=(6, 6), occlusion_prob=0.0
    )
    vectors: dict[tuple[str, str], list[np.ndarray]] = collections.defaultdict(list)
    for name in image_files(root):
        match = ILIDS_FILE.match(name)
        pixels = read_rgb(root / name).ravel()
        vectors[(match.group(2), match.group(1))].append(pixels - pixels.mean())  # type: ignore[union-attr]

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    for person in {p for p, _ in vectors}:
        cam1, cam2 = vectors[(person, "1")], vectors[(person, "2")]
        within = np.mean(
            [corr(a, b) for frames in (cam1, cam2) for i, a in enumerate(frames) for b in frames[i + 1 :]]
        )
        across = np.mean([corr(a, b) for a in cam1 for b in cam2])
        assert within > across + 0.2, (person, within, across)
        # ...and the frames of a tracklet are not copies: the person walks and the box jitters.
        assert len({hashlib.sha256(v.tobytes()).hexdigest() for v in cam1}) == len(cam1)
        assert min(corr(a, b) for i, a in enumerate(cam1) for b in cam1[i + 1 :]) < 0.995


def test_camera_colour_cast_shifts_the_mean_colour(tmp_path: Path) -> None:
    def camera_means(cast: float) -> np.ndarray:
        root, _ = synth(
            tmp_path, f"cast{cast}", layout="mars", num_identities=4, color_cast=cast, num_distractors=0
        )
        sums: dict[str, list[np.ndarray]] = collections.defaultdict(list)
        for name in image_files(root):
            sums[MARS_FILE.match(name).group(4)].append(read_rgb(root / name).mean((0, 1)))  # type: ignore[union-attr]
        means = np.array([np.mean(v, axis=0) for _, v in sorted(sums.items())])
        return means / means.sum(1, keepdims=True)  # chromaticity: the cast, not the brightness

    plain, cast = camera_means(0.0), camera_means(1.0)
    assert np.abs(cast - cast.mean(0)).mean() > 1.5 * np.abs(plain - plain.mean(0)).mean()


# ---------------------------------------------------------------------------------------------
# The real structure


def _mars_lengths(table: np.ndarray, step: int = 1) -> list[int]:
    return [math.ceil((last - first + 1) / step) for first, last, _, _ in table.tolist()]


def test_mars_plan_reproduces_the_full_reference_structure(reference_dir: Path, tmp_path: Path) -> None:
    config = SynthConfig(layout="mars", output=str(tmp_path / "x"), reference_dir=str(reference_dir))
    plan = plan_dataset(config)
    real = load_mars_info(reference_dir / "info")
    for subset, table in (("bbox_train", real.train), ("bbox_test", real.test)):
        mine = [t for t in plan.tracklets if t.subset == subset]
        assert [(t.person, t.camera) for t in mine] == [(p, c) for _, _, p, c in table.tolist()]
        assert [len(t.numbers) for t in mine] == _mars_lengths(table)
    assert plan.query_rows == real.query_rows.tolist()
    counts = plan_counts(plan)
    assert (counts["persons"], counts["tracklets"], counts["cameras"]) == (1259, 20478, 6)
    assert counts["frames"] == 509914 + 681089


def test_mars_subset_with_info_matches_the_reference_rows(reference_dir: Path, tmp_path: Path) -> None:
    root, summary = synth(
        tmp_path, layout="mars", reference_dir=str(reference_dir), max_identities=1, frame_step=40, **TINY
    )
    real = load_mars_info(reference_dir / "info")
    mine = load_mars_info(root / "info")
    train_rows = real.train[real.train[:, 2] == 1]  # the lowest train person id
    np.testing.assert_array_equal(mine.train[:, 2:], train_rows[:, 2:])
    assert _mars_lengths(mine.train) == _mars_lengths(train_rows, 40)
    persons = real.test[:, 2]
    fraction = 1 / len(np.unique(persons[persons > 0]))
    expected = np.concatenate(
        [
            np.flatnonzero(persons == -1)[: math.ceil((persons == -1).sum() * fraction)],
            np.flatnonzero(persons == 0)[: math.ceil((persons == 0).sum() * fraction)],
            np.flatnonzero(persons == 2),  # the lowest test person id
        ]
    )
    np.testing.assert_array_equal(mine.test[:, 2:], real.test[expected, 2:])
    assert _mars_lengths(mine.test) == _mars_lengths(real.test[expected], 40)
    kept_queries = [r for r in real.query_rows.tolist() if r in set(expected.tolist())]
    assert len(kept_queries) > 0
    assert mine.query_rows.tolist() == [expected.tolist().index(r) for r in kept_queries]
    # The files are those the name lists and tables say, with the original frame numbers.
    listed = (root / "info" / "train_name.txt").read_text().split()
    assert listed[:3] == ["0001C1T0001F001.jpg", "0001C1T0002F001.jpg", "0001C1T0002F041.jpg"]
    assert summary["frames"] == len(image_files(root)) == mine.train[-1, 1] + mine.test[-1, 1]


@pytest.mark.parametrize(("layout", "folder"), [("prid2011", "PRID2011"), ("ilidsvid", "iLIDS-VID")])
def test_split_datasets_reproduce_split_1(
    reference_dir: Path, tmp_path: Path, layout: str, folder: str
) -> None:
    lists = {
        part: split_list_tracklets(
            read_split_list(reference_dir / "datasplits" / folder / "split1" / f"{part}.txt")
        )
        for part in ("traindata", "testdata")
    }
    # The whole structure: every person, camera and tracklet length of the lists.
    config = SynthConfig(layout=layout, output=str(tmp_path / "x"), reference_dir=str(reference_dir))
    plan = plan_dataset(config)
    expected = {key: len(paths) for part in lists.values() for key, paths in part.items()}
    to_folder = {"prid2011": "person_{:04d}", "ilidsvid": "person{:03d}"}[layout]
    assert {(to_folder.format(t.person), t.camera): len(t.numbers) for t in plan.tracklets} == expected
    assert plan_counts(plan)["persons"] == {"prid2011": 178, "ilidsvid": 300}[layout]

    # A written subset: the two lowest persons of train and of test, every 3rd frame, real names.
    root, _ = synth(tmp_path, layout=layout, reference_dir=str(reference_dir), max_identities=2, frame_step=3)
    keep = {f for part in lists.values() for f in sorted({folder for folder, _ in part})[:2]}
    wanted = []
    for part in lists.values():
        for (person, _), paths in part.items():
            if person in keep:
                wanted += paths[::3]
    if layout == "prid2011":
        wanted = [p.replace("cam1/", "cam_a/", 1).replace("cam2/", "cam_b/", 1) for p in wanted]
    else:
        wanted = ["sequences/" + p for p in wanted]
    assert image_files(root) == sorted(wanted)


def test_frame_step_keeps_the_bytes_of_the_kept_frames(reference_dir: Path, tmp_path: Path) -> None:
    options = {"layout": "prid2011", "reference_dir": str(reference_dir), "max_identities": 1}
    every, _ = synth(tmp_path, "every", **options)
    third, _ = synth(tmp_path, "third", frame_step=3, **options)
    names = image_files(third)
    assert set(names) < set(image_files(every))
    assert digests(third, names) == digests(every, names)


# ---------------------------------------------------------------------------------------------
# Bad input, atomic publication, CLI


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("layout", "market"),
        ("output", "s3://bucket/raw"),
        ("output", " "),
        ("seed", -1),
        ("num_identities", 1),
        ("num_cameras", 7),
        ("frames_per_tracklet", (5, 2)),
        ("frames_per_tracklet", (0, 3)),
        ("frames_per_tracklet", (3,)),
        ("frames_per_tracklet", (1, 1000)),  # MARS numbers frames with 3 digits
        ("tracklets_per_camera", (0, 1)),
        ("num_distractors", -1),
        ("image_height", 8),
        ("image_width", 4096),
        ("reference_split", 11),
        ("frame_step", 0),
        ("max_identities", -1),
        ("color_cast", 1.5),
        ("occlusion_prob", -0.1),
        ("clutter", 2.0),
        ("back_view_prob", 1.01),
        ("workers", 0),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    values = {"layout": "mars", "output": "/tmp/unused", field: value}
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        SynthConfig(**values)


def test_two_camera_datasets_refuse_other_camera_counts() -> None:
    SynthConfig(layout="prid2011", output="x", num_cameras=2)
    with pytest.raises(ConfigError, match="^num_cameras: "):
        SynthConfig(layout="ilidsvid", output="x", num_cameras=3)


def test_failure_publishes_nothing_and_keeps_the_previous_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = synth(tmp_path, layout="prid2011", num_identities=2, seed=5)
    before = digests(root, files_of(root))
    calls = []

    def failing_encoder(image: np.ndarray) -> bytes:
        calls.append(1)
        if len(calls) > 5:
            raise OSError(28, "No space left on device")
        return b"partial"

    monkeypatch.setattr(synthetic_encode, "encode_png", failing_encoder)
    with pytest.raises(DalError, match="No space left"):
        synth(tmp_path, layout="prid2011", num_identities=2, seed=6)
    assert digests(root, files_of(root)) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temp directory left beside it


def test_foreign_output_directory_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DalError, match="output: .*not an earlier dal synth output"):
        synth(tmp_path, layout="ilidsvid", num_identities=2)
    assert files_of(tmp_path / "out") == ["keep.txt"]


def test_a_rerun_replaces_an_earlier_output(tmp_path: Path) -> None:
    first, _ = synth(tmp_path, layout="ilidsvid", num_identities=2, seed=1)
    old = set(image_files(first))
    again, _ = synth(tmp_path, layout="ilidsvid", num_identities=3, seed=2)
    assert again == first and set(image_files(again)) != old
    assert json.loads((again / "synth.json").read_text())["config"]["seed"] == 2
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_missing_reference_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DalError, match="reference_dir"):
        synth(tmp_path, layout="ilidsvid", reference_dir=str(tmp_path / "nowhere"))


def test_cli_writes_the_layout_and_rejects_bad_values(tmp_path: Path) -> None:
    dal = Path(sys.executable).parent / "dal"
    command = [str(dal), "synth", "--layout", "ilidsvid", "--output", str(tmp_path / "raw")]
    command += [
        "--num-identities",
        "2",
        "--frames-per-tracklet",
        "2",
        "3",
        "--image-height",
        "32",
        "--image-width",
        "16",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["tracklets"] == 4 and summary["persons"] == 2
    assert all(ILIDS_FILE.match(n) for n in image_files(tmp_path / "raw"))
    assert len(image_files(tmp_path / "raw")) == summary["frames"]

    bad = subprocess.run(
        command + ["--frame-step", "0"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert bad.returncode != 0 and "frame_step" in bad.stderr
