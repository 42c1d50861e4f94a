"""ONNX export: parity with PyTorch on padded batches, dynamic axes, an intact model directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from slimtext import load  # noqa: E402
from slimtext.artifact import read_model_dir  # noqa: E402
from slimtext.export import (  # noqa: E402
    ExportError,
    export_onnx,
    onnx_parity,
    quantize_onnx,
)

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model directory with `model.onnx` exported into it (default path)."""
    d = tmp_path_factory.mktemp("export") / "tiny"
    shutil.copytree(tiny_model_dir, d)
    export_onnx(d)
    return d


def _feed(b: int, t: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (b, t), generator=g)
    keep = torch.randint(1, t + 1, (b,), generator=g)
    keep[0] = t
    mask = torch.arange(t)[None, :] < keep[:, None]
    return ids.masked_fill(~mask, 0), mask


def test_exported_directory_still_verifies_and_lists_the_onnx(exported_dir):
    md = read_model_dir(exported_dir)  # raises if the manifest no longer matches
    files = json.loads((exported_dir / "manifest.json").read_text())["files"]
    assert "model.onnx" in files and "model.onnx.json" in files
    info = json.loads((exported_dir / "model.onnx.json").read_text())
    assert info["exporter"] == "fused"  # a TransformerClassifier: ORT's fused ops
    assert info["max_abs_diff"] <= ATOL
    assert md.labels  # and it is still a usable model directory
    assert not list(exported_dir.glob(".*tmp")), "temporary files left behind"


def _as_the_side_file_says(exported: Path, texts: list[str]) -> np.ndarray:
    """The probabilities a program without slimtext gets from model.onnx and tokenizer.json
    doing what model.onnx.json's "inputs" says (README, "Running an export without slimtext")."""
    from tokenizers import Tokenizer

    info = json.loads((exported / "model.onnx.json").read_text())["inputs"]
    assert info["padding"] == "right" and info["long_text"] == "truncate"
    tok = Tokenizer.from_file(str(exported / "tokenizer.json"))
    tok.encode_special_tokens = "encode_special_tokens = true" in info["tokenizer"]
    if "no_padding()" in info["tokenizer"]:
        tok.no_padding()
    tok.enable_truncation(info["max_length"])
    rows = [e.ids for e in tok.encode_batch(texts)]
    width = max(map(len, rows))
    ids = np.array([r + [info["pad_id"]] * (width - len(r)) for r in rows], dtype=np.int64)
    mask = np.array([[i < len(r) for i in range(width)] for r in rows])
    sess = ort.InferenceSession(str(exported / "model.onnx"))
    (logits,) = sess.run(None, {"input_ids": ids, "attention_mask": mask})
    probs = np.exp(logits - logits.max(1, keepdims=True))
    assert info["labels"] == load(exported).labels
    return probs / probs.sum(1, keepdims=True)


def test_the_export_alone_gives_slimtexts_answers_as_its_side_file_says(exported_dir):
    # A service in another language has model.onnx, tokenizer.json and the side file, not
    # slimtext: following the side file must give the same probabilities. A literal "[SEP]" in a
    # text was read as the control token by tokenizer.json alone (encode_special_tokens).
    texts = ["goal match team", "bank profit [SEP] shares [PAD] fell [CLS]",
             " ".join(["goal bank weather"] * 30)]  # fmt: skip
    np.testing.assert_allclose(
        _as_the_side_file_says(exported_dir, texts),
        load(exported_dir).predict_proba(texts),
        atol=1e-5,
    )


def test_the_side_file_is_right_for_a_given_tokenizer_json_that_pads(tmp_path, toy_data):
    # A tokenizer.json brought with its own padding on is saved with it (as given), and read as
    # it says, each text came back padded to the batch's longest: the side file's mask, true
    # on every id "as the tokenizer gives them", then counted the padding as text.
    from slimtext.api import TextClassifier
    from slimtext.tokenizer import train_tokenizer

    texts, labels = toy_data
    given = train_tokenizer(texts, vocab_size=150).backend
    given.enable_padding(pad_id=given.token_to_id("[PAD]"), pad_token="[PAD]")
    given.save(str(tmp_path / "tokenizer.json"))
    clf = TextClassifier(model="transformer", tokenizer=str(tmp_path / "tokenizer.json"),
                         hidden_size=16, num_layers=1, num_heads=2, ffn_size=32, max_length=32,
                         max_steps=3, verbose=False).fit((texts, labels))  # fmt: skip
    clf.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "tokenizer.json").read_text())["padding"]
    export_onnx(tmp_path / "m")
    some = ["goal match team", " ".join(texts[:3]), "bank"]
    np.testing.assert_allclose(
        _as_the_side_file_says(tmp_path / "m", some),
        load(tmp_path / "m").predict_proba(some),
        atol=1e-5,
    )


def test_onnx_has_dynamic_batch_and_sequence_axes(exported_dir):
    sess = ort.InferenceSession(str(exported_dir / "model.onnx"))
    ins = {i.name: i for i in sess.get_inputs()}
    assert set(ins) == {"input_ids", "attention_mask"}
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    for i in ins.values():
        assert all(isinstance(d, str) for d in i.shape), f"{i.name} has a fixed axis: {i.shape}"


def test_padding_never_changes_onnx_logits(exported_dir):
    md = read_model_dir(exported_dir)
    sess = ort.InferenceSession(str(exported_dir / "model.onnx"))
    for b, t in [(1, 8), (4, 24), (7, 32)]:
        ids, mask = _feed(b, t, md.config.vocab_size, seed=b)
        with torch.inference_mode():
            ref = md.model(ids, mask).numpy()
        out = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
        # The same rows with 8 more padding columns: identical logits.
        pad_ids = torch.cat([ids, torch.zeros(b, 8, dtype=torch.long)], 1)
        pad_mask = torch.cat([mask, torch.zeros(b, 8, dtype=torch.bool)], 1)
        if t + 8 <= md.config.max_length:
            out2 = sess.run(
                None, {"input_ids": pad_ids.numpy(), "attention_mask": pad_mask.numpy()}
            )[0]
            np.testing.assert_allclose(out2, out, atol=ATOL, rtol=0)


def test_torchscript_fallback_when_dynamo_fails(tiny_model_dir, tmp_path, monkeypatch):
    import slimtext.export as ex
    import slimtext.onnx_fused as fused

    def broken(*a, **k):
        raise RuntimeError("simulated dynamo failure")

    def unsupported(*a, **k):
        raise fused.FusedUnsupported("simulated: a layer the fused builder does not know")

    monkeypatch.setattr(fused, "build_fused", unsupported)
    monkeypatch.setattr(ex, "_export_dynamo", broken)
    msgs: list[str] = []
    out = export_onnx(tiny_model_dir, out=tmp_path / "m.onnx", mask_dtype="int64", log=msgs.append)
    assert json.loads((tmp_path / "m.onnx.json").read_text())["exporter"] == "torchscript"
    assert any("using TorchScript" in m for m in msgs)
    md = read_model_dir(tiny_model_dir)
    assert onnx_parity(out, md.model, md.config.vocab_size, 32, mask_dtype="int64") <= ATOL
    # Exporting elsewhere leaves the (read-only) source directory exactly as it was.
    assert not (tiny_model_dir / "model.onnx").exists()


def test_a_dynamo_graph_onnx_rejects_is_an_export_error_or_a_fallback(tiny_model_dir, tmp_path):
    # torch's dynamo exporter writes opset 18's `Split(num_outputs=...)` into an opset 17 graph
    # of a transformer: ORT refused to load it inside the parity check and `slimtext export
    # --exporter dynamo --opset 17` ended in a traceback (InvalidGraph), exit status 1.
    with pytest.raises(ExportError, match=r"dynamo export failed.*--opset 18"):
        export_onnx(tiny_model_dir, out=tmp_path / "d.onnx", exporter="dynamo", opset=17)
    assert not list(tmp_path.iterdir()), "files left behind"
    # `auto` (here: no fused graph) falls back to TorchScript, as for any dynamo failure
    import slimtext.onnx_fused as fused

    def unsupported(*a, **k):
        raise fused.FusedUnsupported("simulated: a layer the fused builder does not know")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused, "build_fused", unsupported)
        out = export_onnx(tiny_model_dir, out=tmp_path / "a.onnx", opset=17)
    assert json.loads((tmp_path / "a.onnx.json").read_text())["exporter"] == "torchscript"
    assert out.is_file()


def test_failed_parity_check_publishes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    import slimtext.export as E

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    before = (d / "manifest.json").read_text()
    monkeypatch.setattr(E, "onnx_parity", lambda *a, **k: 0.5)  # a graph that computes wrong
    with pytest.raises(ExportError, match="differs from PyTorch by 5.00e-01"):
        export_onnx(d, exporter="torchscript", optimize=False, atol=1e-4)
    assert not (d / "model.onnx").exists()
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())
    assert (d / "manifest.json").read_text() == before


def test_int8_export_keeps_dynamic_axes_and_predictions(exported_dir):
    q = quantize_onnx(exported_dir, exporter="torchscript")
    assert q.name == "model.int8.onnx"
    md = read_model_dir(exported_dir)  # manifest re-written again
    sess = ort.InferenceSession(str(q))
    for i in sess.get_inputs():
        assert all(isinstance(d, str) for d in i.shape)
    agree = []
    for b, t in [(1, 8), (5, 16), (9, 32)]:
        ids, mask = _feed(b, t, md.config.vocab_size, seed=10 + b)
        with torch.inference_mode():
            ref = md.model(ids, mask).numpy()
        out = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert out.shape == ref.shape
        agree.extend(out.argmax(1) == ref.argmax(1))
    assert np.mean(agree) >= 0.9


def test_bad_arguments_are_rejected_before_any_work(tiny_model_dir):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_model_dir, opset=13)
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(tiny_model_dir, exporter="tf")
    # a negative or NaN atol: refused only once the export was done, as a logit difference
    # ("differs from PyTorch by 2.98e-08 > atol=-1.0")
    for atol in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="atol must be a number >= 0"):
            export_onnx(tiny_model_dir, atol=atol)


def test_an_int8_model_directory_exports_its_exact_float_math(tiny_model_dir, tmp_path):
    """A directory quantized by `slimtext compress` (fbgemm int8 Linear and embedding) exports:
    the graph holds the dequantized weights, and ORT int8 on top keeps the predictions."""
    from slimtext.artifact import save_model_dir
    from slimtext.compress import Int8Dynamic, quantize_

    md = read_model_dir(tiny_model_dir)
    rec = quantize_(md.model, Int8Dynamic())
    d = tmp_path / "int8"
    save_model_dir(d, md.model, md.config, md.tokenizer, md.labels, max_length=md.max_length,
                   compression=[rec])  # fmt: skip
    path = export_onnx(d, exporter="torchscript")  # raises if parity fails
    q = read_model_dir(d)
    sess = ort.InferenceSession(str(path))
    ids, mask = _feed(4, 16, q.config.vocab_size, seed=3)
    with torch.inference_mode():
        ref = q.model(ids, mask).numpy()  # fbgemm: int8 activations too, so close, not equal
    out = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(out, ref, atol=0.05)
    assert (out.argmax(1) == ref.argmax(1)).all()
    assert quantize_onnx(d, exporter="torchscript").is_file()


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_attention_model_with_ngrams_exports_with_parity(tmp_path, toy_data, exporter):
    # The hashed-bigram ids (shift, multiply, modulo on int64) must survive both exporters.
    from slimtext.api import TextClassifier

    d = tmp_path / "attn"
    TextClassifier(model="attention", vocab_size=300, hidden_size=16, max_length=24,
                   ngram_buckets=50, epochs=1, batch_size=16,
                   verbose=False).fit(toy_data).save(d)  # fmt: skip
    export_onnx(d, exporter=exporter)
    md = read_model_dir(d)
    sess = ort.InferenceSession(str(d / "model.onnx"))
    ids, mask = _feed(5, 20, md.config.vocab_size, seed=3)
    with torch.inference_mode():
        ref = md.model(ids, mask).numpy()
    out = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


def _mask_type(path) -> str:
    sess = ort.InferenceSession(str(path))
    return {i.name: i.type for i in sess.get_inputs()}["attention_mask"]


def test_int8_export_takes_the_mask_dtype_and_opset_of_the_fp32_export(tiny_model_dir, tmp_path):
    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    q = quantize_onnx(d, out=tmp_path / "explicit.int8.onnx", mask_dtype="int64", opset=17)
    side = json.loads((tmp_path / "explicit.int8.onnx.json").read_text())
    assert _mask_type(q) == "tensor(int64)" and side["mask_dtype"] == "int64"
    assert side["opset"] == 17
    # Without arguments (`slimtext export --int8 --mask-dtype int64`): as the directory's
    # model.onnx, so both files take the same inputs.
    export_onnx(d, mask_dtype="int64", opset=17)
    q = quantize_onnx(d)
    side = json.loads((d / "model.int8.onnx.json").read_text())
    assert _mask_type(q) == _mask_type(d / "model.onnx") == "tensor(int64)"
    assert side["mask_dtype"] == "int64" and side["opset"] == 17
    with pytest.raises(ValueError, match="int64 mask"):
        quantize_onnx(d, source=d / "model.onnx", mask_dtype="bool")
    read_model_dir(d)


def test_export_lists_only_the_files_it_wrote(tiny_model_dir, tmp_path):
    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    stray = d / ".model.onnx.k1ll3d.tmp"  # what a killed export leaves behind
    stray.write_bytes(b"partial")
    before = json.loads((d / "manifest.json").read_text())["files"]
    export_onnx(d)
    files = json.loads((d / "manifest.json").read_text())["files"]
    assert set(files) == set(before) | {"model.onnx", "model.onnx.json"}
    assert {k: files[k] for k in before} == before
    stray.unlink()  # cleaning up must not break the directory
    read_model_dir(d)


def test_a_killed_exports_temporary_files_are_removed_by_the_next_export(tiny_model_dir, tmp_path):
    # kill -9 mid-export left a model-sized .model.onnx.XXXX.tmp for good
    import fcntl
    import os
    import time

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    hour_ago = time.time() - 3600

    def stray(name: str, age: float | None = hour_ago):
        p = d / name
        p.write_bytes(b"partial")
        if age is not None:
            os.utime(p, (age, age))
        return p

    killed, side = stray(".model.onnx.k1ll3d.tmp"), stray(".model.onnx.k1ll3d.tmp.json")
    fresh = stray(".model.onnx.fr3sh.tmp", None)  # may be another export's, still running
    held = stray(".model.onnx.h3ld.tmp")  # locked: its writer is alive
    other = stray(".notes.k1ll3d.tmp")  # not an export of this target
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        export_onnx(d)
    finally:
        os.close(fd)
    assert not killed.exists() and not side.exists()
    assert fresh.exists() and held.exists() and other.exists()
    read_model_dir(d)


def test_exporting_into_a_read_only_directory_says_to_use_out(tiny_model_dir, tmp_path,
                                                              monkeypatch):  # fmt: skip
    # it said "[Errno 30] Read-only file system: '.../.model.onnx.XXXX.tmp'"
    import errno

    import slimtext.export as ex

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    monkeypatch.setattr(ex.tempfile, "mkstemp", read_only)
    with pytest.raises(ExportError, match=r"cannot write model.onnx into .*tiny .*with --out"):
        export_onnx(d)


def test_cli_export_out_as_a_file_or_a_folder_keeps_the_int8_beside_it(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from slimtext.cli import app

    run = lambda *a: CliRunner().invoke(app, ["export", str(tiny_model_dir), *map(str, a)])  # noqa: E731
    r = run("--out", tmp_path / "a.onnx", "--int8")
    assert r.exit_code == 0, r.output
    r = run("--out", tmp_path / "b.onnx", "--int8")  # same folder: b's int8 does not replace a's
    assert r.exit_code == 0, r.output
    names = {p.name for p in tmp_path.glob("*.onnx")}
    assert {"a.onnx", "a.int8.onnx", "b.onnx", "b.int8.onnx"} <= names
    folder = tmp_path / "into"
    folder.mkdir()
    r = run("--out", folder, "--int8")  # an existing folder: the usual names inside it
    assert r.exit_code == 0, r.output
    assert {"model.onnx", "model.int8.onnx"} <= {p.name for p in folder.iterdir()}
    assert ".tmp" not in r.output  # only the files that stay are reported as written
    r = run("--out", f"{tmp_path / 'new'}/", "--int8")  # a trailing /: a folder, created
    assert r.exit_code == 0, r.output
    assert {"model.onnx", "model.int8.onnx"} <= {p.name for p in (tmp_path / "new").iterdir()}
    # another tool's g.int8.onnx: refused before g.onnx is written (it was left half done)
    (tmp_path / "g.int8.onnx").write_text("theirs")
    r = run("--out", tmp_path / "g.onnx", "--int8")
    assert r.exit_code == 2 and "not an earlier slimtext export" in r.output, r.output
    assert not (tmp_path / "g.onnx").exists() and (tmp_path / "g.int8.onnx").read_text() == "theirs"


def test_export_out_never_overwrites_what_is_not_an_export(tiny_model_dir, tmp_path):
    from slimtext.fileio import TargetExistsError

    d = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, d)
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    for out in (notes, d / "model.safetensors", d / "other.onnx"):
        with pytest.raises(TargetExistsError):  # they were overwritten with ONNX bytes
            export_onnx(d, out=out)
    assert notes.read_text() == "precious"
    read_model_dir(d)  # its weights are intact
    # --out the model directory itself is the default place: listed in its manifest, so the
    # directory still verifies and can be replaced by a later train
    export_onnx(d, out=d)
    quantize_onnx(d, d / "model.int8.onnx")
    files = json.loads((d / "manifest.json").read_text())["files"]
    assert {"model.onnx", "model.int8.onnx"} <= set(files)
    export_onnx(d, out=tmp_path / "x.onnx")
    export_onnx(d, out=tmp_path / "x.onnx")  # an earlier export is replaced
    # a file that merely ends in .onnx, another tool's model.onnx in a folder, and a .json
    # that would be the sidecar: none is ours, none is overwritten (each was)
    other = tmp_path / "theirs"
    other.mkdir()
    (other / "model.onnx").write_text("another tool's model")
    (tmp_path / "foo.onnx").write_text("precious")
    (tmp_path / "bar.onnx.json").write_text('{"mine": 1}')
    for out in (other, tmp_path / "foo.onnx", tmp_path / "bar.onnx"):
        with pytest.raises(TargetExistsError, match="not an earlier slimtext export"):
            export_onnx(d, out=out)
    with pytest.raises(TargetExistsError, match="not an earlier slimtext export"):
        quantize_onnx(d, tmp_path / "foo.onnx")
    assert (tmp_path / "foo.onnx").read_text() == "precious"
    assert (other / "model.onnx").read_text() == "another tool's model"
    assert (tmp_path / "bar.onnx.json").read_text() == '{"mine": 1}'


def test_cli_export_names_the_target_of_an_os_error_that_has_none(tiny_model_dir, tmp_path,
                                                                monkeypatch):  # fmt: skip
    import errno

    from typer.testing import CliRunner

    from slimtext import export
    from slimtext.cli import app

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "export_onnx", full_disk)
    target = tmp_path / "m.onnx"
    r = CliRunner().invoke(app, ["export", str(tiny_model_dir), "--out", str(target)])
    assert r.exit_code == 2 and "No space left on device" in r.output
    assert str(target) in r.output.replace("\n", "") and "Traceback" not in r.output


def test_onnxruntime_without_onnx_is_the_extras_hint_and_makes_no_folder(
    tiny_model_dir, tmp_path, monkeypatch
):
    # `pip install onnxruntime` brings no onnx: a bare "No module named 'onnx'" after
    # `--out newdir/` had been created, and the same from the onnxruntime backend
    import sys

    import slimtext

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ImportError, match=r"onnx is not installed .*slimtext\[onnx\]"):
        export_onnx(tiny_model_dir, out=f"{tmp_path / 'newdir'}/")
    assert not (tmp_path / "newdir").exists()
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ImportError, match=r"slimtext\[onnx\]"):
        slimtext.load(tiny_model_dir, backend="onnxruntime").predict(["a text"])
    assert not (tmp_path / "cache" / "onnx").exists()
    # but a directory that ships its graph runs it without onnx (only making one needs it)
    monkeypatch.delitem(sys.modules, "onnx")
    d = tmp_path / "shipped"
    shutil.copytree(tiny_model_dir, d)
    export_onnx(d)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert slimtext.load(d, backend="onnxruntime").predict(["a text"])


def test_an_export_killed_before_its_listing_leaves_the_directory_loadable(
    tiny_model_dir, tmp_path, monkeypatch
):
    # killed between replacing model.onnx and updating the manifest: every load, torch's too,
    # failed on the export's checksum
    import slimtext
    from slimtext.fileio import read_manifest

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    export_onnx(d)
    listed = read_manifest(d)["model.onnx"]
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes() + b"\0")  # another graph
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    texts = ["goal match team", "bank profit shares"]
    want = slimtext.load(tiny_model_dir).predict_proba(texts)
    np.testing.assert_allclose(slimtext.load(d).predict_proba(texts), want, atol=1e-6)
    ort_pred = slimtext.load(d, backend="onnxruntime")
    assert ort_pred.onnx_path != d / "model.onnx"  # the unlisted file is not run: made again
    np.testing.assert_allclose(ort_pred.predict_proba(texts), want, atol=1e-4)
    export_onnx(d)  # and exporting again puts it right
    assert read_manifest(d)["model.onnx"]["size"] == listed["size"]
    assert slimtext.load(d, backend="onnxruntime").onnx_path == d / "model.onnx"


def test_a_damaged_cached_export_is_made_again(tiny_model_dir, tmp_path, monkeypatch):
    # a truncated file in SLIMTEXT_CACHE was never rebuilt: the backend failed until deleted
    import slimtext

    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    first = slimtext.load(tiny_model_dir, backend="onnxruntime")
    cached = first.onnx_path
    assert (tmp_path / "cache") in cached.parents
    cached.write_bytes(cached.read_bytes()[:100])
    cached.with_name(cached.name + ".json").write_text("")  # its side file too
    again = slimtext.load(tiny_model_dir, backend="onnxruntime")
    assert again.onnx_path == cached and cached.stat().st_size > 100
    np.testing.assert_allclose(again.predict_proba(["a text"]), first.predict_proba(["a text"]))


def test_a_callers_onnx_file_in_the_cache_folder_is_never_replaced(tiny_model_dir, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    # the rebuild of a damaged cached export deleted a file the caller had passed
    import slimtext

    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "cache" / "onnx" / "my_custom.onnx"
    mine.parent.mkdir(parents=True)
    mine.write_text("junk")
    with pytest.raises(ExportError, match="my_custom.onnx: ONNX Runtime .* cannot load it"):
        slimtext.load(tiny_model_dir, backend="onnxruntime", onnx_path=mine)
    assert mine.read_text() == "junk"


def test_exporting_into_a_model_directory_whose_path_is_not_utf8_is_refused(
    tiny_model_dir, tmp_path
):
    import os

    odd = tmp_path / os.fsdecode(b"mod\xe8le")
    shutil.copytree(tiny_model_dir, odd)
    with pytest.raises(ValueError, match="the path is not UTF-8; export with --out"):
        export_onnx(odd)


def test_a_model_directorys_own_export_under_the_cache_folder_is_never_deleted(
    tiny_model_dir, tmp_path, monkeypatch
):
    import slimtext
    from slimtext.fileio import update_manifest

    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    mm = tmp_path / "cache" / "onnx" / "mm"
    shutil.copytree(tiny_model_dir, mm)
    export_onnx(mm)
    (mm / "model.onnx").write_bytes(b"a graph this ONNX Runtime cannot load")
    update_manifest(mm, ["model.onnx"])  # listed: as a newer opset's graph would be
    with pytest.raises(ExportError, match="cannot load it"):
        slimtext.load(mm, backend="onnxruntime")
    assert (mm / "model.onnx").is_file() and (mm / "model.onnx.json").is_file()
