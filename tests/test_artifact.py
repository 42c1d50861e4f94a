import json
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

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


def _crlf(d):
    for name in ("config.json", "README.md", "labels.json"):
        p = d / name
        p.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))


def _lfs(d):
    (d / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 606976\n"
    )


def _dangling(d):
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").symlink_to("../.git/annex/objects/xx/model")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda d: os.truncate(d / "model.safetensors", 1000), "truncated"),
        (lambda d: (d / "labels.json").write_text('["a", "b", "c"]\n'), "size|checksum"),
        (lambda d: (d / "manifest.json").unlink(), "manifest"),
        # what version control did, named with the fix (it was "truncated or altered" or
        # "missing (truncated copy?)"): git's autocrlf, an LFS pointer, git-annex not fetched
        (_crlf, "line ends were changed to CRLF .*core.autocrlf"),
        (_lfs, "a Git LFS pointer, not the file: fetch it with `git lfs pull`"),
        (_dangling, "is a link to .*annex.*, which does not exist"),
    ],
)
def test_damaged_model_dir_gives_a_clear_error(tiny_model_dir, tmp_path, damage, message):
    d = corrupt_copy(tiny_model_dir, tmp_path / "bad", damage)
    with pytest.raises(ModelDirError, match=message):
        slimtext.load(d)


def test_an_edited_model_card_or_a_missing_training_log_still_loads(tiny_model_dir, tmp_path):
    # a user documenting their model, or a copy without the curve: the directory was refused
    def edit(d):
        with open(d / "README.md", "a") as f:
            f.write("\nOwner: the search team\n")
        for name in ("training_curve.png", "metrics.jsonl"):
            (d / name).unlink(missing_ok=True)

    d = corrupt_copy(tiny_model_dir, tmp_path / "edited", edit)
    got = slimtext.load(d).predict_proba(["goal match team"])
    np.testing.assert_array_equal(
        got, slimtext.load(tiny_model_dir).predict_proba(["goal match team"])
    )
    # what predicting reads is still checked
    d = corrupt_copy(
        tiny_model_dir, tmp_path / "bad", lambda d: (d / "labels.json").write_text("[]")
    )
    with pytest.raises(ModelDirError, match="labels.json"):
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


def _save(md, path):
    return save_model_dir(path, md.model, md.config, md.tokenizer, md.labels,
                          max_length=md.max_length)  # fmt: skip


def _user_project(p):
    p.mkdir()
    (p / "notes.txt").write_text("mine")
    (p / "data").mkdir()
    (p / "data" / "train.csv").write_text("text,label\n")


def _data_file(p):
    p.write_text("text,label\nhello,a\n")


def _foreign_manifest(p):
    # A manifest alone does not make a model directory: config.json must say slimtext wrote it.
    p.mkdir()
    (p / "manifest.json").write_text('{"files": {}}\n')
    (p / "config.json").write_text('{"format": "something-else"}\n')


@pytest.mark.parametrize("make", [_user_project, _data_file, _foreign_manifest])
def test_saving_over_something_that_is_not_a_model_dir_is_refused(tiny_model_dir, tmp_path, make):
    from slimtext.artifact import check_save_target
    from slimtext.fileio import TargetExistsError

    md = read_model_dir(tiny_model_dir)
    target = tmp_path / "out"
    make(target)
    before = sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in tmp_path.rglob("*"))
    with pytest.raises(TargetExistsError, match="refusing to replace") as err:
        _save(md, target)
    assert str(target) in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileExistsError)
    with pytest.raises(TargetExistsError):
        check_save_target(target)  # the same answer before any work is done
    after = sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in tmp_path.rglob("*"))
    assert after == before  # intact, and no temporary directory left behind


def test_resaving_over_a_model_dir_holding_a_users_file_is_refused(tiny_model_dir, tmp_path):
    from slimtext.artifact import check_save_target
    from slimtext.fileio import TargetExistsError

    md = read_model_dir(tiny_model_dir)
    target = tmp_path / "m"
    _save(md, target)
    (target / ".partial.tmp").write_text("a killed write's leftover")  # hidden: not the user's
    _save(md, target)
    (target / "notes.txt").write_text("mine")
    with pytest.raises(TargetExistsError, match=r"did not write \(notes.txt\)"):
        check_save_target(target)
    with pytest.raises(TargetExistsError, match="notes.txt"):
        _save(md, target)
    assert (target / "notes.txt").read_text() == "mine"
    # hidden files are the user's too (they were taken for temporary files and deleted)
    (target / "notes.txt").unlink()
    (target / ".git").mkdir()
    (target / ".git" / "HEAD").write_text("ref: refs/heads/main")
    with pytest.raises(TargetExistsError, match=r"\.git/HEAD"):
        _save(md, target)
    assert (target / ".git" / "HEAD").is_file()


def test_resaving_over_a_model_dir_or_an_empty_dir_works(tiny_model_dir, tmp_path):
    md = read_model_dir(tiny_model_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    _save(md, empty)
    _save(md, empty)  # over a model directory: replaced whole
    read_model_dir(empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_model_dirs_get_the_modes_a_plain_write_would_give(tiny_model_dir, tmp_path):
    md = read_model_dir(tiny_model_dir)
    old = os.umask(0o022)
    try:
        d = _save(md, tmp_path / "shared")
    finally:
        os.umask(old)
    assert d.stat().st_mode & 0o777 == 0o755  # mkdtemp alone would give 0700
    for p in d.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644, p.name  # safetensors alone: 0600


def _rewrite_config(fn):
    def damage(d):
        from slimtext.fileio import write_manifest

        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(fn(cfg)))
        write_manifest(d)  # consistent: only the content is wrong

    return damage


def _rewrite_json(name, fn):
    def damage(d):
        from slimtext.fileio import write_manifest

        new = fn(json.loads((d / name).read_text()))
        (d / name).write_text(new if isinstance(new, str) else json.dumps(new))
        write_manifest(d)

    return damage


def _model(cfg, **sizes):
    return {**cfg, "model": {**cfg["model"], **sizes}}


def _grow_vocab(tok):
    vocab = tok["model"]["vocab"]
    vocab.update({f"extra{i}": len(vocab) + i for i in range(5000)})
    return tok


def _manifest_entries(fn):
    def damage(d):
        files = json.loads((d / "manifest.json").read_text())["files"]
        (d / "manifest.json").write_text(
            json.dumps({"files": {k: fn(v) for k, v in files.items()}})
        )

    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "manifest.json").write_text("null"), "malformed manifest"),
        (lambda d: (d / "manifest.json").write_text('{"files": []}'), "malformed manifest"),
        (lambda d: (d / "manifest.json").write_bytes(b"\xff\xfe"), "unreadable manifest"),
        (_manifest_entries(lambda v: {}), "needs an integer size and a sha256"),
        (_manifest_entries(lambda v: {**v, "size": "12"}), "needs an integer size"),
        (
            lambda d: (d / "manifest.json").write_text(
                '{"files": {"../x": {"size": 1, "sha256": "0"}}}'
            ),
            "outside",
        ),
        (_rewrite_config(lambda c: [c]), "expected a JSON object"),
        (_rewrite_config(lambda c: {**c, "format_version": "2"}), "format_version must be"),
        (_rewrite_config(lambda c: {**c, "format_version": 2}), "newer slimtext"),
        # a newer model record with a field this version lacks: "unknown model config fields:
        # ['rope']" read as a damaged file, not as "upgrade"
        (_rewrite_config(lambda c: _model(c, version=2, rope=True)), "newer slimtext"),
        # not a version number: named as such (0 and "1" read as newer, true and 1.0 as 1)
        *[
            (
                _rewrite_config(lambda c, v=v: _model(c, version=v)),
                r"config\.json: .*version must be a positive integer",
            )
            for v in (0, -1, 1.0, "1", True, None)
        ],
        (_rewrite_config(lambda c: {**c, "max_length": "abc"}), "max_length must be"),
        # doctored and re-signed: each a traceback, an allocation of terabytes or a hang before
        (_rewrite_config(lambda c: {**c, "train": [1]}), "train must be a JSON dict"),
        (_rewrite_config(lambda c: _model(c, hidden_size=10**9)), "sizes no model has"),
        (_rewrite_config(lambda c: _model(c, ffn_size=10**6)), "do not match config.json"),
        (_rewrite_config(lambda c: _model(c, vocab_size=10**12)), "do not match config.json"),
        (_rewrite_config(lambda c: _model(c, num_layers=10**7)), "layers is not a model"),
        (_rewrite_config(lambda c: _model(c, num_layers=2)), r"encoder\.blocks\.1.*missing in"),
        (_rewrite_json("config.json", lambda c: "[" * 100_000), "unreadable JSON"),
        (lambda d: (d / "manifest.json").write_text("[" * 100_000), "unreadable manifest"),
        (_rewrite_json("labels.json", lambda c: [c[0], c[0], *c[2:]]), "distinct, non-empty"),
        (_rewrite_json("labels.json", lambda c: [{"a": 1}, *c[1:]]), "distinct, non-empty"),
        (_rewrite_json("labels.json", lambda c: list(range(len(c)))), "distinct, non-empty"),
        (_rewrite_json("metrics.json", lambda c: [1, 2]), "expected a JSON object"),
        (_rewrite_json("tokenizer.json", _grow_vocab), "the tokenizer of another model"),
    ],
)
def test_malformed_manifest_or_config_gives_a_clear_error(tiny_model_dir, tmp_path, damage,
                                                          message):  # fmt: skip
    d = corrupt_copy(tiny_model_dir, tmp_path / "bad", damage)
    with pytest.raises(ModelDirError, match=message):
        slimtext.load(d)


def test_a_file_that_vanishes_while_verifying_is_an_integrity_error(tiny_model_dir, monkeypatch):
    import slimtext.fileio as fileio

    def vanished(path):
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(fileio, "sha256_file", vanished)
    with pytest.raises(ModelDirError, match="unreadable"):
        read_model_dir(tiny_model_dir)


def test_manifest_writes_are_atomic_and_updates_touch_only_named_files(tiny_model_dir, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    import slimtext.fileio as fileio

    d = corrupt_copy(tiny_model_dir, tmp_path / "d", lambda d: None)
    before = (d / "manifest.json").read_text()

    def crash(fd):
        raise OSError("disk full")

    with monkeypatch.context() as m:  # a crash mid-write leaves the old manifest whole
        m.setattr(fileio.os, "fsync", crash)
        with pytest.raises(OSError, match="disk full"):
            fileio.write_manifest(d)
    assert (d / "manifest.json").read_text() == before
    (d / "extra.txt").write_text("new")
    (d / ".model.onnx.abc123.tmp").write_text("left by a killed export")
    fileio.update_manifest(d, ["extra.txt"])
    files = json.loads((d / "manifest.json").read_text())["files"]
    assert "extra.txt" in files and ".model.onnx.abc123.tmp" not in files
    (d / ".model.onnx.abc123.tmp").unlink()
    read_model_dir(d)
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []


def _folder(path, tag):
    with atomic_dir(path) as tmp:
        (tmp / "tag.txt").write_text(tag)


def _tag(path):
    return (path / "tag.txt").read_text()


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_failed_swap_leaves_the_old_directory_in_place(tmp_path, monkeypatch, exchange):
    import slimtext.fileio as fileio

    target = tmp_path / "model"
    _folder(target, "old")
    real_replace, real_exchange = os.replace, fileio._exchange

    def failing_replace(src, dst):
        if Path(dst) == target and ".tmp-" in Path(src).name:  # the new directory moving in
            raise OSError("disk gone")
        return real_replace(src, dst)

    def failing_exchange(a, b):
        raise OSError("disk gone")

    monkeypatch.setattr(fileio.os, "replace", failing_replace)
    monkeypatch.setattr(fileio, "_exchange", failing_exchange if exchange else lambda a, b: False)
    with pytest.raises(OSError, match="disk gone"):
        _folder(target, "new")
    assert _tag(target) == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing left beside it
    monkeypatch.setattr(fileio, "_exchange", real_exchange)
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    _folder(target, "new")
    assert _tag(target) == "new"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
def test_readers_never_see_the_directory_missing_while_it_is_replaced(tmp_path):
    # Two renames leave a moment without the target: a server reloading the model then fails.
    target = tmp_path / "model"
    _folder(target, "0")
    stop, missing = threading.Event(), []

    def watch():
        while not stop.is_set():
            if not os.path.isdir(target):
                missing.append(1)

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(1, 200):
            _folder(target, str(i))
    finally:
        stop.set()
        t.join()
    assert _tag(target) == "199" and not missing
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.fixture(scope="module")
def another_model_dir(tmp_path_factory, toy_data):
    """A second tiny model with another vocabulary: what a retrain swaps in."""
    from slimtext.api import TextClassifier

    clf = TextClassifier(model="transformer", vocab_size=300, hidden_size=32, num_layers=1,
                         num_heads=2, ffn_size=64, max_length=32, max_steps=3, seed=7,
                         verbose=False).fit(toy_data)  # fmt: skip
    return clf.save(tmp_path_factory.mktemp("other") / "other")


def test_a_directory_swapped_in_mid_read_is_read_whole_not_mixed(
    tiny_model_dir, another_model_dir, tmp_path, monkeypatch
):
    # A retrain saving into the same path swaps the directory; a reader half-way through read
    # the old config and the new weights ("weights do not match config.json"), or a silent mix.
    import slimtext.artifact as artifact

    m, new = tmp_path / "m", tmp_path / "new"
    shutil.copytree(tiny_model_dir, m)
    shutil.copytree(another_model_dir, new)
    real, swapped = artifact.load_tokenizer, []

    def swap_then_load(path):
        if not swapped:
            os.rename(m, tmp_path / "old")
            os.rename(new, m)
            swapped.append(True)
        return real(path)

    monkeypatch.setattr(artifact, "load_tokenizer", swap_then_load)
    md = read_model_dir(m)
    assert swapped and md.config.vocab_size == read_model_dir(another_model_dir).config.vocab_size
    want = load_file(str(another_model_dir / "model.safetensors"))
    assert all(torch.equal(v, want[k]) for k, v in md.model.state_dict().items())


def test_saving_into_the_current_directory_is_refused_before_anything_is_written(
    tiny_model_dir, tmp_path, monkeypatch
):
    # It was saved by swapping the folder out: the process (and the shell that started it) was
    # left in a deleted folder, where `ls` showed nothing and writes failed. Earlier still, it
    # was refused only after training, or failed with EBUSY renaming ".".
    md = read_model_dir(tiny_model_dir)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    for out in (".", Path("."), Path("")):
        with pytest.raises(ValueError, match="would replace the working folder"):
            _save(md, out)
    assert list((tmp_path / "here").iterdir()) == []
    _save(md, tmp_path / "here" / "m")  # a folder inside the working one is fine
    assert read_model_dir(tmp_path / "here" / "m").labels == md.labels


def test_an_unwritable_or_full_disk_is_one_clear_error_and_leaves_nothing(
    tiny_model_dir, tmp_path, monkeypatch
):
    import errno
    import tempfile

    import slimtext.artifact as artifact
    from slimtext.artifact import check_save_target

    md = read_model_dir(tiny_model_dir)
    real_mkdtemp = tempfile.mkdtemp

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(ModelDirError, match="cannot write there.*[Rr]ead-only"):
        check_save_target(tmp_path / "m")  # before training, not after (it was a traceback)
    monkeypatch.setattr(tempfile, "mkdtemp", real_mkdtemp)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(artifact, "save_file", full)
    with pytest.raises(ModelDirError, match="could not write the model directory.*space"):
        _save(md, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []  # no temporary directory left


def test_a_killed_saves_temporary_copy_is_swept_but_a_live_one_is_left(tiny_model_dir, tmp_path):
    # SIGKILL mid-save left ".m.tmp-*" (a whole model) beside m for good, one per kill.
    from slimtext.fileio import _hold

    md = read_model_dir(tiny_model_dir)
    dead, live = tmp_path / ".m.tmp-dead", tmp_path / ".m.tmp-live"
    for d in (dead, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x" * 100)
    fd = _hold(live)  # a save still running in another process
    try:
        _save(md, tmp_path / "m")
    finally:
        os.close(fd)
    assert not dead.exists() and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.tmp-live", "m"]


def test_a_file_the_manifest_does_not_list_is_not_read(tiny_model_dir, tmp_path):
    from slimtext.fileio import write_manifest

    secret = tmp_path / "secret.json"
    secret.write_text('{"aws_secret_access_key": "AKIA"}')
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "metrics.json").unlink()
    (d / "metrics.json").symlink_to(secret)  # served by /v1/model to any client, before
    files = json.loads((d / "manifest.json").read_text())["files"]
    del files["metrics.json"]
    (d / "manifest.json").write_text(json.dumps({"files": files}))
    assert slimtext.load(d).model_dir.meta["metrics"] == {}
    (d / "metrics.json").unlink()
    shutil.copy(tiny_model_dir / "metrics.json", d / "metrics.json")
    write_manifest(d)  # listed again: read again
    assert slimtext.load(d).model_dir.meta["metrics"]


def test_a_model_saved_with_decomposed_labels_meets_its_own_data(tiny_model_dir, tmp_path):
    import unicodedata

    from slimtext.fileio import write_manifest

    # labels.json as a version before NFC labels wrote it from a Mac's class folders
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    labels = json.loads((d / "labels.json").read_text())
    nfd = [unicodedata.normalize("NFD", "Ärger"), *labels[1:]]
    (d / "labels.json").write_text(json.dumps(nfd))
    write_manifest(d)
    md = slimtext.load(d).model_dir
    assert md.labels[0] == "Ärger"  # NFC, as the data loaders now read "Ärger"


def test_a_model_dir_this_user_cannot_delete_is_refused_before_training(tiny_model_dir, tmp_path,
                                                                         monkeypatch):  # fmt: skip
    import os

    from slimtext.fileio import TargetExistsError, check_replaceable

    d = tmp_path / "theirs"
    shutil.copytree(tiny_model_dir, d)
    check_replaceable(d)  # ours to replace
    real = os.access
    # another user's directory (root passes every access check, so it is simulated)
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != d and real(p, mode))
    with pytest.raises(TargetExistsError, match="not writable by this user"):
        check_replaceable(d)  # it stayed as a hidden full copy beside the new model


def test_many_classes_keep_metrics_json_card_and_model_info_small(tmp_path):
    # 2,000 classes: an 88 MB metrics.json parsed by every load, returned by /v1/model on every
    # call, and a 74 KB line of labels in the model card
    from slimtext.metrics import classification_report
    from slimtext.models import ModelConfig, build_model
    from slimtext.tokenizer import train_tokenizer

    n = 120
    labels = ["odd `tick`"] + [f"c{i}" for i in range(n - 1)]
    tok = train_tokenizer(TEXTS * 5, vocab_size=100)
    cfg = ModelConfig(arch="attention", vocab_size=tok.vocab_size, num_labels=n, hidden_size=8,
                      max_length=16)  # fmt: skip
    report = classification_report(list(range(n)) + [1], list(range(n)) + [2], labels)
    metrics = {"valid": report, "before_changes_in_memory": {"test": report}}
    save_model_dir(tmp_path / "m", build_model(cfg), cfg, tok, labels, max_length=16,
                   metrics=metrics)  # fmt: skip
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    for rep in (saved["valid"], saved["before_changes_in_memory"]["test"]):
        assert "confusion_matrix" not in rep and rep["top_confusions"][0]["count"] == 1
        assert rep["accuracy"] == report["accuracy"] and len(rep["per_class"]) == n
    card = (tmp_path / "m" / "README.md").read_text()
    assert "`` odd `tick` ``, `c0`" in card  # a backtick does not break the card's code span
    assert "`c48`, ... (70 more in labels.json)" in card and "c49" not in card
    pytest.importorskip("fastapi")
    from slimtext.serve.app import _metrics_summary

    info = _metrics_summary(read_model_dir(tmp_path / "m").meta["metrics"])
    assert info["valid"] == {k: report[k] for k in ("accuracy", "macro_f1", "n")}
    assert set(info["before_changes_in_memory"]["test"]) == {"accuracy", "macro_f1", "n"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd is Linux's")
def test_a_model_directory_whose_path_is_not_utf8_loads_back(tiny_model_dir, tmp_path):
    # a Latin-1 "mod\xe8le" was written, then refused as "unreadable weights" by safetensors
    odd = tmp_path / os.fsdecode(b"mod\xe8le")
    shutil.copytree(tiny_model_dir, odd)
    want = slimtext.load(tiny_model_dir).predict_proba(TEXTS)
    np.testing.assert_allclose(slimtext.load(odd).predict_proba(TEXTS), want, atol=1e-6)


def test_an_empty_output_path_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    from slimtext.artifact import check_save_target

    with pytest.raises(ValueError, match="empty output path"):  # "" was the working folder
        check_save_target("")
    (tmp_path / "in").mkdir()
    monkeypatch.chdir(tmp_path / "in")  # an empty folder: save("") replaced it with the model
    clf = slimtext.TextClassifier.load(tiny_model_dir)
    with pytest.raises(ValueError, match="empty output path"):
        clf.save("")
    for same in (Path(""), ".", tmp_path / "in", tmp_path):  # Path("") is "."; or a parent
        with pytest.raises(ValueError, match="would replace the working folder"):
            clf.save(same)
    assert list((tmp_path / "in").iterdir()) == []


def test_an_output_that_is_a_symlink_loop_is_one_clear_error(tiny_model_dir, tmp_path):
    from slimtext.artifact import check_save_target

    (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
    with pytest.raises(ValueError, match="symbolic link"):  # was a RuntimeError traceback
        check_save_target(tmp_path / "loopA")


def test_model_card_says_a_model_was_compressed_or_fine_tuned_from_a_pretrained_encoder(tmp_path):
    # the card of an int8 model, or of one started from `slimtext pretrain`'s encoder, read
    # exactly like a plain fp32 model trained from scratch
    from slimtext.models import ModelConfig, build_model
    from slimtext.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXTS * 5, vocab_size=100)
    cfg = ModelConfig(arch="attention", vocab_size=tok.vocab_size, num_labels=2, hidden_size=8,
                      max_length=16)  # fmt: skip
    quant = {"step": "quantize", "version": 1,
             "config": {"method": "int8-dynamic", "skip": [], "version": 1}}  # fmt: skip
    save_model_dir(tmp_path / "m", build_model(cfg), cfg, tok, ["a", "b"], max_length=16,
                   train_config={"init": "my-encoder"}, compression=[quant])  # fmt: skip
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Fine-tuned from the pretrained encoder `my-encoder`." in card
    assert "Compressed after training: `quantize:method=int8-dynamic`" in card
    save_model_dir(tmp_path / "plain", build_model(cfg), cfg, tok, ["a", "b"], max_length=16)
    plain = (tmp_path / "plain" / "README.md").read_text()
    assert "Fine-tuned" not in plain and "Compressed" not in plain


def test_model_card_tells_compression_steps_apart_and_names_a_distill_teacher(tmp_path):
    # a head prune and an FFN prune have the same config: the card listed `prune:ratio=0.5`
    # twice; a distilled student's depth and its external teacher were not on it at all
    from slimtext.models import ModelConfig, build_model
    from slimtext.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXTS * 5, vocab_size=100)
    cfg = ModelConfig(arch="attention", vocab_size=tok.vocab_size, num_labels=2, hidden_size=8,
                      max_length=16)  # fmt: skip
    prune = {"step": "prune", "version": 1, "config": {"ratio": 0.5, "version": 1}}
    distill = {"step": "distill", "version": 1, "config": {"alpha": 0.5, "version": 1},
               "student": {"num_layers": 1}, "teacher": "hf:roberta-teacher"}  # fmt: skip
    steps = [distill, {**prune, "kind": "heads"}, {**prune, "kind": "ffn"}]
    save_model_dir(tmp_path / "m", build_model(cfg), cfg, tok, ["a", "b"], max_length=16,
                   compression=steps)  # fmt: skip
    card = (tmp_path / "m" / "README.md").read_text()
    assert (
        "Compressed after training: `distill:layers=1,teacher=hf:roberta-teacher,alpha=0.5`, "
        "`prune:kind=heads,ratio=0.5`, `prune:kind=ffn,ratio=0.5`" in card
    )


def test_model_card_keeps_a_data_path_with_a_backtick_or_newline_on_one_code_span(tmp_path):
    from slimtext.models import ModelConfig, build_model
    from slimtext.tokenizer import train_tokenizer

    tok = train_tokenizer(TEXTS * 5, vocab_size=100)
    cfg = ModelConfig(arch="attention", vocab_size=tok.vocab_size, num_labels=2, hidden_size=8,
                      max_length=16)  # fmt: skip
    data = {"train": {"source": "we`ird\nname.jsonl", "rows": 9}}
    save_model_dir(tmp_path / "m", build_model(cfg), cfg, tok, ["a", "b"], max_length=16,
                   metrics={"training": {"data": data}})  # fmt: skip
    card = (tmp_path / "m" / "README.md").read_text()
    assert "Trained on `` we`ird\\nname.jsonl `` (9 rows)." in card.splitlines()
