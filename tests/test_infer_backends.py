"""Predictor backends: every backend gives the torch backend's answers, in input order."""

from __future__ import annotations

import math
import shutil
import sys

import pytest
import torch

from slimtext.infer import length_buckets, load

ATOL = 1e-4


@pytest.fixture(scope="module")
def texts(toy_texts):
    # 4..60 words: with max_length 32 some are truncated, so every bucket is used.
    return toy_texts(12, seed=7, min_words=1, max_words=60)[0]


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from slimtext.export import export_onnx

    d = tmp_path_factory.mktemp("infer") / "tiny"
    shutil.copytree(tiny_model_dir, d)
    export_onnx(d, exporter="torchscript")  # the fast exporter; test_export covers dynamo
    return d


def test_torch_backend_keeps_input_order_and_ignores_padding(tiny_model_dir, texts):
    pred = load(tiny_model_dir, batch_size=5)
    got = pred.logits(texts)
    with torch.inference_mode():
        for i, ids in enumerate(pred.encode(texts)[0]):
            one = torch.tensor([ids])  # unpadded, alone
            ref = pred.model(one, torch.ones_like(one, dtype=torch.bool))[0]
            torch.testing.assert_close(got[i], ref, atol=ATOL, rtol=0)


def test_torch_bf16_runs_under_autocast_and_stays_close_to_fp32(tiny_model_dir, texts):
    ref = load(tiny_model_dir, batch_size=5)
    pred = load(tiny_model_dir, backend="torch-bf16", batch_size=5)
    got = pred.logits(texts)
    assert got.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: close to fp32, but not equal (so autocast really ran).
    torch.testing.assert_close(got, ref.logits(texts), atol=0.1, rtol=0.05)
    assert not torch.equal(got, ref.logits(texts))
    probs = pred.predict_proba(texts)
    assert probs.shape == (len(texts), len(pred.labels))


@pytest.mark.parametrize("backend", ["torch-bf16", "compile-bf16"])
def test_bf16_backend_asked_by_name_warns_where_bf16_is_emulated(
    tiny_model_dir, monkeypatch, backend
):
    # On an AVX2 CPU torch-bf16 ran ~10x slower than torch, without a word.
    import warnings

    import slimtext.infer as infer

    monkeypatch.setattr(infer, "native_bf16", lambda device="cpu": False)
    with pytest.warns(UserWarning, match=rf"backend {backend}: .*no AVX512-BF16 or AMX.*emulated"):
        load(tiny_model_dir, backend=backend, warmup=False)
    monkeypatch.setattr(infer, "native_bf16", lambda device="cpu": True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load(tiny_model_dir, backend=backend, warmup=False)  # native: nothing to say


def test_onnxruntime_matches_torch(onnx_dir, texts):
    ref = load(onnx_dir, batch_size=5).logits(texts)
    pred = load(onnx_dir, backend="onnxruntime", batch_size=5)
    assert pred.backend == "onnxruntime" and pred.onnx_path == onnx_dir / "model.onnx"
    torch.testing.assert_close(pred.logits(texts), ref, atol=ATOL, rtol=0)
    assert pred.predict(texts) == load(onnx_dir).predict(texts)


def test_onnxruntime_exports_into_a_cache_when_the_directory_has_none(
    tiny_model_dir, texts, tmp_path, monkeypatch
):
    pytest.importorskip("onnxruntime")
    import slimtext.export as ex

    # TorchScript keeps the test fast; the cache path is what is under test.
    real = ex.export_onnx
    monkeypatch.setattr(ex, "export_onnx", lambda *a, **k: real(*a, exporter="torchscript", **k))
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path))
    pred = load(tiny_model_dir, backend="onnxruntime", batch_size=8)
    assert pred.onnx_path.parent == tmp_path / "onnx"
    assert not (tiny_model_dir / "model.onnx").exists()
    torch.testing.assert_close(pred.logits(texts), load(tiny_model_dir).logits(texts), atol=ATOL,
                               rtol=0)  # fmt: skip


def test_a_model_replaced_after_it_was_read_neither_poisons_the_cache_nor_gets_its_export(
    tiny_model_dir, toy_data, texts, tmp_path, monkeypatch
):
    # The cache was keyed by the file at the path when the export ran (maybe a retrain's new
    # weights) but held the weights read before: the new model then served the old graph.
    pytest.importorskip("onnxruntime")
    from slimtext.api import TextClassifier
    from slimtext.artifact import read_model_dir
    from slimtext.export import ExportError, export_onnx
    from slimtext.infer import Predictor

    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    m = tmp_path / "m"
    shutil.copytree(tiny_model_dir, m)
    old = read_model_dir(m)
    TextClassifier(model="transformer", vocab_size=300, hidden_size=32, num_layers=1,
                   num_heads=2, ffn_size=64, max_length=32, max_steps=3, seed=7,
                   verbose=False).fit(toy_data).save(m)  # the retrain  # fmt: skip
    first = Predictor(old, backend="onnxruntime")  # exports the weights it read
    torch.testing.assert_close(first.logits(texts), Predictor(old).logits(texts), atol=ATOL,
                               rtol=0)  # fmt: skip
    new = load(m, backend="onnxruntime")
    torch.testing.assert_close(new.logits(texts), load(m).logits(texts), atol=ATOL, rtol=0)
    # nor may an export of the old weights be listed in the new directory's manifest
    with pytest.raises(ExportError, match="was replaced while exporting"):
        export_onnx(old)
    assert not (m / "model.onnx").exists()


def _counting_backend(graphs: list):
    def backend(gm, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return gm.forward

    return backend


@pytest.fixture(scope="module")
def tiny_attention_dir(tmp_path_factory, toy_data):
    from slimtext.api import TextClassifier

    # With hashed bigrams, so the compile test covers their integer ops too.
    clf = TextClassifier(model="attention", vocab_size=400, hidden_size=32, max_length=32,
                         ngram_buckets=64, epochs=1, batch_size=16,
                         verbose=False).fit(toy_data)  # fmt: skip
    path = tmp_path_factory.mktemp("models") / "tiny-attention"
    clf.save(path)
    return path


@pytest.mark.parametrize("model", ["transformer", "attention"])
def test_compile_matches_torch_and_does_not_recompile_per_length(model, texts, request):
    d = request.getfixturevalue(
        "tiny_model_dir" if model == "transformer" else "tiny_attention_dir"
    )
    torch._dynamo.reset()
    graphs: list = []
    pred = load(d, backend="compile", batch_size=4, compile_backend=_counting_backend(graphs))
    ref = load(d, batch_size=4)
    torch.testing.assert_close(pred.logits(texts), ref.logits(texts), atol=ATOL, rtol=0)
    # Many lengths (3..32 tokens after truncation) and batch sizes 1..5.
    words = ["match", "goal", "team", "chip", "code", "bank", "market", "the", "of"]
    for n in range(1, 41, 2):
        batch = [" ".join(words[: 1 + (n + j) % 9] * (1 + n // 9)) for j in range(1 + n % 5)]
        torch.testing.assert_close(pred.logits(batch), ref.logits(batch), atol=ATOL, rtol=0)
    if model == "transformer":
        # Batch, length and token-count axes dynamic: forward at batch 1 (always specialised
        # by dynamo) and at batch >= 2, forward_packed on ragged batches (length groups need
        # more than batch_size 4) serve every shape.
        assert hasattr(pred.model, "forward_packed")
        assert 1 <= len(graphs) <= 3, graphs
    else:
        # Lengths padded to buckets; each bucket compiles at most twice (batch 1 and >= 2).
        assert not hasattr(pred.model, "forward_packed")
        assert pred.buckets == length_buckets(32) == [16, 32]
        assert 1 <= len(graphs) <= 2 * len(pred.buckets), graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch", "compile"])
def test_a_cuda_predictor_gives_the_cpu_results(tiny_model_dir, texts, backend):
    # compile: inductor itself (Triton kernels), counted, not a stand-in backend.
    from torch._inductor.compile_fx import compile_fx

    def inductor(gm, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return compile_fx(gm, example_inputs)

    torch._dynamo.reset()
    graphs: list = []
    opts = {"compile_backend": inductor} if backend == "compile" else {}
    gpu = load(tiny_model_dir, backend=backend, device="cuda", batch_size=4, **opts)
    cpu = load(tiny_model_dir, batch_size=4)
    assert next(gpu.model.parameters()).device.type == "cuda"
    torch.testing.assert_close(gpu.logits(texts), cpu.logits(texts), atol=ATOL, rtol=0)
    assert gpu.predict(texts) == cpu.predict(texts)
    for n in range(1, 30, 3):  # many lengths and batch sizes: no recompile per length on CUDA
        words = ["goal", "bank", "chip", "the"]
        batch = [" ".join(words[: 1 + j % 4] * n) for j in range(n % 5 + 1)]
        torch.testing.assert_close(gpu.logits(batch), cpu.logits(batch), atol=ATOL, rtol=0)
    if backend == "compile":
        assert 1 <= len(graphs) <= 3, graphs


def test_compile_on_an_int8_model_stops_compiling_once_warm(tiny_model_dir, texts, tmp_path):
    # fbgemm's int8 op breaks the graph at every Int8Linear: each piece was compiled again for
    # every new shape until dynamo's recompile limit (58 recompiles for a 2-layer model).
    from slimtext.artifact import read_model_dir, save_model_dir
    from slimtext.compress import Int8Dynamic, quantize_

    md = read_model_dir(tiny_model_dir)
    quantize_(md.model, Int8Dynamic())
    d = tmp_path / "q8"
    save_model_dir(d, md.model, md.config, md.tokenizer, md.labels, max_length=md.max_length,
                   compression=md.model.slimtext_compression)  # fmt: skip
    torch._dynamo.reset()
    graphs: list = []
    pred = load(d, backend="compile", batch_size=4, compile_backend=_counting_backend(graphs))
    ref = load(d, batch_size=4)
    words = ["match", "goal", "team", "chip", "code", "bank", "market", "the", "of"]
    for n, b in [(3, 1), (7, 2), (12, 5), (20, 3)]:  # warm: batch 1 and more, both paths
        pred.logits([" ".join(words[: 1 + j % 9] * n) for j in range(b)])
    warm = len(graphs)
    for n in range(1, 40, 2):
        batch = [" ".join(words[: 1 + (n + j) % 9] * (1 + n // 4)) for j in range(1 + n % 5)]
        torch.testing.assert_close(pred.logits(batch), ref.logits(batch), atol=ATOL, rtol=0)
    assert len(graphs) == warm, (warm, len(graphs))


def test_grouped_batches_give_the_plain_forward_logits(tiny_model_dir):
    # A batch of >= GROUP_MIN texts runs attention in length groups, its rows sorted by length:
    # the logits must still be forward's, in the batch's own (unsorted) row order.
    import numpy as np

    from slimtext.infer import GROUP_MIN, _group_rows

    rng = np.random.default_rng(0)
    n, t = GROUP_MIN + 7, 32
    lengths = rng.integers(1, t + 1, n)
    mask = np.arange(t)[None, :] < lengths[:, None]
    vocab = load(tiny_model_dir).model.config.vocab_size
    ids = np.where(mask, rng.integers(1, vocab, (n, t)), 0)
    assert _group_rows(mask) is not None and _group_rows(mask[:, :4] | True) is None  # ragged only
    torch._dynamo.reset()
    graphs: list = []
    for backend in ("torch", "compile"):
        pred = load(tiny_model_dir, backend=backend, batch_size=64,
                    compile_backend=_counting_backend(graphs))  # fmt: skip
        with torch.no_grad():
            want = pred.model(torch.from_numpy(ids), torch.from_numpy(mask))
        for rows in (slice(None), slice(0, GROUP_MIN), slice(3, 5)):  # 4 groups, 4, 1 group
            got = torch.from_numpy(pred._runner(ids[rows], mask[rows]))
            torch.testing.assert_close(got, want[rows], atol=ATOL, rtol=0)
    assert len(graphs) <= 2, graphs  # grouped batches of any size and length: one graph


def test_warm_up_compiles_every_graph_later_calls_need(tiny_model_dir):
    # A server warms up before /readyz: afterwards no batch size, length or padding may compile.
    torch._dynamo.reset()
    graphs: list = []
    pred = load(tiny_model_dir, backend="compile", batch_size=64, warmup=False,
                compile_backend=_counting_backend(graphs))  # fmt: skip
    pred.warm_up_all()  # alone: load's own warm-up call is off
    warmed = len(graphs)
    assert warmed >= 4, graphs  # forward at batch 1 and >= 2, packed, length-grouped
    words = ["the", "match", "goal", "team", "chip", "code", "bank", "market", "of"]
    for n in (1, 2, 3, 7, 31, 32, 40, 64, 65):
        ragged = [" ".join(words[: 1 + i % 9] * (1 + i % 4)) for i in range(n)]
        pred.logits(ragged)
        pred.logits([ragged[-1]] * n)  # equal lengths: forward, not packed
    assert len(graphs) == warmed, graphs[warmed:]


@pytest.mark.parametrize("max_length", [32, 512])
def test_bf16_compile_graphs_do_not_depend_on_the_attention_length(toy_data, tmp_path, max_length):
    # bf16 attention takes the math path up to 384 tokens and SDPA beyond. Compiled, a test on
    # the (dynamic) length would be a guard: a new graph on each side of 384, mid-prediction.
    import numpy as np

    from slimtext.api import TextClassifier

    TextClassifier(model="transformer", vocab_size=300, hidden_size=16, num_layers=1,
                   num_heads=2, ffn_size=32, max_length=max_length, max_steps=2,
                   batch_size=8, verbose=False).fit(toy_data).save(tmp_path / "m")  # fmt: skip
    torch._dynamo.reset()
    graphs: list = []
    pred = load(tmp_path / "m", backend="compile-bf16", batch_size=64, warmup=False,
                compile_backend=_counting_backend(graphs))  # fmt: skip
    pred.warm_up_all()
    warmed = len(graphs)
    rng = np.random.default_rng(0)
    for lengths in ([3, 100, 20], [1 + i for i in range(40)], [90] * 30 + [200, 420, 480, 500]):
        ids = [rng.integers(5, 300, min(n, max_length)).tolist() for n in lengths]
        pred.logits_from_ids(ids)
    assert len(graphs) == warmed, graphs[warmed:]


def test_only_batches_with_much_padding_take_the_packed_path(tiny_model_dir, monkeypatch):
    # forward_packed skips padding's work but gathers keys and values every layer: worth it only
    # when a batch is mostly padding. Either path must give forward's logits.
    import numpy as np

    pred = load(tiny_model_dir, batch_size=64)
    packed_calls = []
    real = pred.model.forward_packed
    monkeypatch.setattr(pred.model, "forward_packed", lambda *a: packed_calls.append(1) or real(*a))
    vocab = pred.model.config.vocab_size
    rng = np.random.default_rng(3)
    cases = [([16] * 8, False), ([15, 16, 16, 16], False), ([1, 16, 3, 16], True), ([5], False)]
    for lengths, packed in cases:
        t = -(-max(lengths) // 8) * 8
        mask = np.arange(t)[None, :] < np.array(lengths)[:, None]
        ids = np.where(mask, rng.integers(1, vocab, mask.shape), 0)
        packed_calls.clear()
        got = torch.from_numpy(pred._runner(ids, mask))
        assert bool(packed_calls) == packed, lengths
        with torch.no_grad():
            want = pred.model(torch.from_numpy(ids), torch.from_numpy(mask))
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("max_len", [8, 16, 32, 100, 128, 136, 512, 4096])
def test_length_buckets_are_few_and_waste_at_most_a_quarter_above_64_tokens(max_len):
    b = length_buckets(max_len)
    assert b[-1] == max_len and b == sorted(set(b))
    assert all(x % 16 == 0 for x in b[:-1])
    # padding a text of n > 64 tokens up to its bucket adds at most a quarter of n
    assert all(hi <= 1.25 * lo for lo, hi in zip(b[:-1], b[1:], strict=True) if lo >= 64), b
    # ... and the count grows with the log of max_len: 4 per doubling
    assert len(b) <= 4 + 4 * max(0, math.ceil(math.log2(max_len / 64))) + 1, b


@pytest.mark.slow
def test_compile_with_inductor_matches_torch(tiny_model_dir, texts):
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    pred = load(tiny_model_dir, backend="compile", batch_size=64)
    ref = load(tiny_model_dir, batch_size=64)
    torch.testing.assert_close(pred.logits(texts), ref.logits(texts), atol=ATOL, rtol=0)


@pytest.mark.skipif(
    not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
    reason="compile-bf16 is for CPUs with native bf16 (AVX512-BF16 or AMX)",
)
def test_compile_bf16_freezes_under_autocast_and_stays_close_to_fp32(tiny_model_dir, texts):
    pytest.importorskip("torch._inductor")
    torch._dynamo.reset()
    pred = load(tiny_model_dir, backend="compile-bf16", batch_size=8)
    ref = load(tiny_model_dir, batch_size=8).logits(texts)
    eager_bf16 = load(tiny_model_dir, backend="torch-bf16", batch_size=8).logits(texts)
    got = pred.logits(texts)
    assert pred.backend == "compile-bf16" and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=0.1, rtol=0.05)  # bf16: close to fp32...
    assert not torch.equal(got, ref)  # ...but not equal, so autocast really ran
    torch.testing.assert_close(got, eager_bf16, atol=0.05, rtol=0.05)  # same maths as eager
    import torch._inductor.config as inductor_config

    assert inductor_config.freezing is False  # patched per call, not left on for the process


def test_auto_picks_an_available_backend_and_agrees_with_torch(onnx_dir, texts):
    from slimtext.infer import LOW_PRECISION_MARGIN, native_bf16

    pred = load(onnx_dir, backend="auto", batch_size=8)
    fp32 = {"torch", "onnxruntime"}
    assert set(pred.backend_timings) == fp32 | ({"torch-bf16"} if native_bf16() else set())
    t = pred.backend_timings
    best_fp32 = min(t[b] for b in fp32)
    if pred.backend == "torch-bf16":  # only when clearly faster than both fp32 backends
        assert t["torch-bf16"] < best_fp32 * (1 - LOW_PRECISION_MARGIN)
    else:
        assert t[pred.backend] == best_fp32
    atol = 5e-2 if pred.backend == "torch-bf16" else ATOL  # bf16: ~1e-2 (see above)
    torch.testing.assert_close(pred.logits(texts), load(onnx_dir).logits(texts), atol=atol,
                               rtol=0)  # fmt: skip
    # onnx_path is the file the winner runs, not the last candidate built
    assert (pred.onnx_path is not None) == pred.backend.startswith("onnxruntime")


def test_auto_races_int8_only_when_the_int8_file_is_there(tiny_model_dir, tmp_path, monkeypatch):
    # a directory exported with --int8 and then copied without its .onnx files still had them
    # in its manifest: auto quantised at load and raced (and could pick) int8
    pytest.importorskip("onnxruntime")
    from slimtext.export import quantize_onnx

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    quantize_onnx(d)
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    assert "onnxruntime-int8" in load(d, backend="auto").backend_timings
    (d / "model.int8.onnx").unlink()
    pred = load(d, backend="auto")
    assert "onnxruntime-int8" not in pred.backend_timings
    assert not list((tmp_path / "cache").rglob("*.int8.onnx"))  # nor quantised at load


def test_missing_onnxruntime_is_a_clear_error(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match=r"pip install 'slimtext\[onnx\]'"):
        load(tiny_model_dir, backend="onnxruntime")
    # ...while auto quietly races what is there.
    from slimtext.infer import native_bf16

    pred = load(tiny_model_dir, backend="auto")
    raced = {"torch"} | ({"torch-bf16"} if native_bf16() else set())
    assert pred.backend in raced and set(pred.backend_timings) == raced


def test_an_onnx_file_onnxruntime_cannot_load_is_named_and_auto_races_the_rest(onnx_dir, tmp_path):
    from slimtext.export import ExportError
    from slimtext.fileio import write_manifest
    from slimtext.infer import native_bf16

    d = tmp_path / "m"
    shutil.copytree(onnx_dir, d)
    (d / "model.onnx").write_bytes(b"\x08\x07 not protobuf")  # e.g. a newer ORT's opset
    (d / "manifest.json").unlink()
    write_manifest(d)  # listed and checksummed: only ONNX Runtime can tell
    with pytest.raises(ExportError, match=r"model\.onnx: ONNX Runtime .* cannot load it"):
        load(d, backend="onnxruntime")
    pred = load(d, backend="auto", batch_size=8)  # the serving default: it crashed too
    raced = {"torch"} | ({"torch-bf16"} if native_bf16() else set())
    assert pred.backend in raced and "cannot load it" in pred.backend_errors["onnxruntime"]


def test_unknown_backend_is_rejected(tiny_model_dir):
    with pytest.raises(ValueError, match="backend must be one of"):
        load(tiny_model_dir, backend="tensorrt")


def test_auto_races_the_rest_when_the_onnx_cache_cannot_be_written(
    tiny_model_dir, tmp_path, monkeypatch
):
    pytest.importorskip("onnxruntime")
    from slimtext.infer import native_bf16

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SLIMTEXT_CACHE", str(blocker / "cache"))  # not creatable, even by root
    pred = load(tiny_model_dir, backend="auto", batch_size=8)
    raced = {"torch"} | ({"torch-bf16"} if native_bf16() else set())
    assert pred.backend in raced and set(pred.backend_timings) == raced
    assert str(blocker) in pred.backend_errors["onnxruntime"]  # why it sat the race out
    # ... and said, by every command (it was kept in backend_errors, which nothing read)
    notes = pred.auto_notes()
    assert notes[0].startswith(f"backend auto: {pred.backend} (")
    assert any("onnxruntime left out: CacheError" in n and "SLIMTEXT_CACHE" in n for n in notes)
    from typer.testing import CliRunner

    from slimtext.cli import app

    r = CliRunner().invoke(app, ["predict", str(tiny_model_dir), "goal", "--backend", "auto"])
    assert r.exit_code == 0 and "note: backend auto: onnxruntime left out" in r.stderr, r.output
    assert load(tiny_model_dir, backend="torch").auto_notes() == []  # asked by name: nothing


def test_no_home_folder_is_a_cache_error_not_a_folder_named_tilde(
    tiny_model_dir, tmp_path, monkeypatch
):
    # an arbitrary container uid with no HOME and no passwd entry: expanduser keeps "~", and the
    # cache went into a folder literally named "~" in the working directory
    pytest.importorskip("onnxruntime")
    monkeypatch.delenv("SLIMTEXT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr("os.path.expanduser", lambda p: p)
    monkeypatch.chdir(tmp_path)
    pred = load(tiny_model_dir, backend="auto", batch_size=8)
    assert "no home folder" in pred.backend_errors["onnxruntime"]
    assert not (tmp_path / "~").exists()


def test_predict_takes_any_iterable_and_rejects_lone_surrogates(tiny_model_dir, texts):
    pred = load(tiny_model_dir, batch_size=8)
    assert pred.predict(t for t in texts) == pred.predict(texts)
    assert pred.predict_proba(iter(texts)).shape == (len(texts), len(pred.labels))
    with pytest.raises(ValueError, match="text 1 has a lone surrogate"):
        pred.predict(["fine", "bad \ud800 text"])


def test_device_auto_and_a_bad_device(tiny_model_dir):
    import slimtext

    pred = slimtext.load(tiny_model_dir, device="auto")
    assert pred.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        slimtext.load(tiny_model_dir, device="gpu")


def test_a_model_changed_in_memory_never_runs_its_directorys_old_onnx(
    tiny_model_dir, texts, tmp_path
):
    # A model directory's manifest vouches for its files, not for a model edited after loading
    # (README: load, prune_, save): the onnxruntime backend ran the directory's own export, or
    # the cache file named by the directory's checksum, i.e. the unedited model's graph.
    pytest.importorskip("onnxruntime")
    from slimtext.artifact import read_model_dir
    from slimtext.export import ExportError, export_onnx
    from slimtext.infer import Predictor

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    export_onnx(d)  # the directory lists a model.onnx of its own
    md = read_model_dir(d)
    # building predictors (compiled ones included) leaves the weights as read
    for backend in ("torch", "compile", "onnxruntime"):
        Predictor(md, backend=backend, compile_backend="eager")
    assert md.weights_as_read()
    assert Predictor(md, backend="onnxruntime").onnx_path == d / "model.onnx"
    with torch.no_grad():
        md.model.head.weight.mul_(-3.0)
    assert not md.weights_as_read()
    ref = Predictor(md, backend="torch").predict_proba(texts)
    ort = Predictor(md, backend="onnxruntime")
    assert ort.onnx_path != d / "model.onnx"
    torch.testing.assert_close(torch.tensor(ort.predict_proba(texts)), torch.tensor(ref),
                               atol=1e-5, rtol=0)  # fmt: skip
    # exporting it into the directory would list a graph of other weights than its own
    with pytest.raises(ExportError, match="no longer the one saved there"):
        export_onnx(md)
    export_onnx(md, out=tmp_path / "edited.onnx")  # elsewhere: fine


def test_non_finite_scores_are_an_error_not_nan_in_json(tiny_model_dir, texts):
    pred = load(tiny_model_dir)
    with torch.no_grad():
        next(pred.model.parameters()).fill_(float("nan"))  # damaged weights
    with pytest.raises(ValueError, match="non-finite scores"):
        pred.predict_proba(texts)
