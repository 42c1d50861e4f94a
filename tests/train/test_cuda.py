"""The training loop on a CUDA GPU (issue #2: the same code on CPU and CUDA, fp16 with a grad
scaler or bf16). CI has no GPU, so these skip there; BENCHMARKS.md's GPU section says where and
how they ran."""

import pytest
import torch
from test_trainer import encoded, killed_after, run  # noqa: F401  (encoded: a fixture)

from slimtext.train.precision import grad_scaler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_loop_trains_on_cuda_in_every_precision(encoded, precision, tmp_path):  # noqa: F811
    model, res = run(encoded, {"run_dir": tmp_path}, epochs=10, precision=precision, device="cuda")
    assert res.precision == precision
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights stay fp32
    assert res.best["accuracy"] >= 0.9
    assert grad_scaler(torch.device("cuda"), precision).is_enabled() == (precision == "fp16")


def test_resume_on_cuda_ends_with_the_uninterrupted_weights(encoded, tmp_path):  # noqa: F811
    # The CUDA RNG state (dropout masks) travels in the checkpoint, as the CPU one does.
    full = tmp_path / "full"
    ref, _ = run(encoded, {"checkpoint_dir": full}, checkpoint_every=4, keep_checkpoints=0,
                 device="cuda")  # fmt: skip
    cut = killed_after(full, 1, tmp_path / "cut")
    resumed, res = run(encoded, {"checkpoint_dir": cut, "resume": True}, checkpoint_every=4,
                       keep_checkpoints=0, device="cuda")  # fmt: skip
    assert res.steps == 27
    after = resumed.state_dict()
    diff = max((v - after[k]).abs().max().item() for k, v in ref.state_dict().items())
    assert diff == 0.0, f"resumed weights differ by up to {diff:.3g}"


def test_a_classifier_trained_on_cuda_predicts_there_and_saves_the_same_model(toy_data, tmp_path):
    # fit() used to hand its predictor a CPU model: `train --test` scored 25,000 IMDB reviews
    # on the CPU after training on the GPU. Written after the GPU session; not yet run on one.
    import numpy as np

    from slimtext import TextClassifier, load

    clf = TextClassifier(model="transformer", vocab_size=400, hidden_size=32, num_layers=1,
                         num_heads=2, ffn_size=64, max_length=32, epochs=4, device="cuda",
                         verbose=False).fit(toy_data)  # fmt: skip
    assert {p.device.type for p in clf.model_dir_.model.parameters()} == {"cuda"}
    texts = toy_data[0][:20]
    clf.save(tmp_path / "m")
    on_cpu = load(tmp_path / "m")
    np.testing.assert_allclose(clf.predict_proba(texts), on_cpu.predict_proba(texts), atol=1e-5)
