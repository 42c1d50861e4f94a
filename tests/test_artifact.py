import json
import os

import numpy as np
import pytest
import torch

import slimtext
from slimtext.artifact import ModelDirError, read_model_dir, save_model_dir
from slimtext.fileio import atomic_dir

TEXTS = ["match goal team", "chip software code data", "bank profit shares", "the a of"]


def test_save_load_round_trip_gives_identical_predictions(tiny_model_dir, tmp_path):
    p1 = slimtext.load(tiny_model_dir)
    md = read_model_dir(tiny_model_dir)
    copy = save_model_dir(tmp_path / "copy", md.model, md.config, md.tokenizer, md.labels,
                          max_length=md.max_length)  # fmt: skip
    p2 = slimtext.load(copy)
    np.testing.assert_array_equal(p1.predict_proba(TEXTS), p2.predict_proba(TEXTS))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "labels.json",
                 "metrics.json", "README.md", "manifest.json"):  # fmt: skip
        assert (tiny_model_dir / name).is_file(), name


def test_model_dir_holds_no_pickle(tiny_model_dir):
    for p in tiny_model_dir.iterdir():
        assert p.suffix not in (".pt", ".pth", ".bin", ".pkl"), p


def corrupt_copy(src, dst, fn):
    import shutil

    shutil.copytree(src, dst)
    fn(dst)
    return dst


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda d: os.truncate(d / "model.safetensors", 1000), "truncated"),
        (lambda d: (d / "labels.json").write_text('["a", "b", "c"]\n'), "size|checksum"),
        (lambda d: (d / "manifest.json").unlink(), "manifest"),
    ],
)
def test_damaged_model_dir_gives_a_clear_error(tiny_model_dir, tmp_path, damage, message):
    d = corrupt_copy(tiny_model_dir, tmp_path / "bad", damage)
    with pytest.raises(ModelDirError, match=message):
        slimtext.load(d)


def test_tampered_bytes_of_same_size_are_detected(tiny_model_dir, tmp_path):
    def flip(d):
        p = d / "model.safetensors"
        b = bytearray(p.read_bytes())
        b[-10] ^= 0xFF
        p.write_bytes(bytes(b))

    d = corrupt_copy(tiny_model_dir, tmp_path / "bad", flip)
    with pytest.raises(ModelDirError, match="checksum"):
        slimtext.load(d)


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(ModelDirError, match="no such model directory"):
        slimtext.load(tmp_path / "nowhere")


def test_a_failed_write_leaves_the_previous_directory_intact(tiny_model_dir, tmp_path):
    import shutil

    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in target.iterdir()) == before
    slimtext.load(target)  # still verifies
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_config_records_format_and_shapes(tiny_model_dir):
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["format"] == "slimtext-model" and cfg["format_version"] == 1
    md = read_model_dir(tiny_model_dir)
    assert md.model.head.out_features == len(md.labels) == cfg["model"]["num_labels"]
    assert isinstance(next(md.model.parameters()), torch.Tensor)
