from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slimtext.compress import Distillation, distill, make_student, teacher_logits
from slimtext.compress.distill import distillation_loss
from slimtext.data.batching import pad_batch
from slimtext.models import ModelConfig, build_model
from slimtext.train.evaluate import evaluate
from slimtext.train.trainer import Encoded, TrainConfig, fit


def test_loss_is_ce_at_alpha_one_and_zero_kl_against_itself():
    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    b = pad_batch([[1, 2]] * 4, [3, 1, 0, 2], 0, [0, 1, 2, 0])
    soft = np.zeros((4, 3), np.float32)
    soft[b.index.numpy()] = logits.numpy()
    ce = distillation_loss(soft, Distillation(alpha=1.0))(logits, b)
    torch.testing.assert_close(ce, F.cross_entropy(logits, b.labels))
    kl = distillation_loss(soft, Distillation(alpha=0.0, temperature=3.0))(logits, b)
    assert float(kl) == pytest.approx(0.0, abs=1e-6)


def test_teacher_logits_are_cached_once(teacher, h, make_toy, tmp_path):
    data = h.encode(teacher, make_toy(5, seed=3))
    pad = teacher.tokenizer.pad_id
    a = teacher_logits(teacher.model, data, pad, tmp_path / "t.npy")
    assert isinstance(a, np.memmap) and a.shape == (len(data), 3)
    with torch.no_grad():
        teacher.model.head.weight.zero_()  # a recomputation would now give other logits
    np.testing.assert_array_equal(teacher_logits(teacher.model, data, pad, tmp_path / "t.npy"), a)


def test_student_starts_from_teacher_layers(teacher):
    s = make_student(teacher.model, num_layers=1)
    assert s.config.num_layers == 1 and len(s.encoder.blocks) == 1
    torch.testing.assert_close(
        s.encoder.blocks[0].ffn_in.weight, teacher.model.encoder.blocks[1].ffn_in.weight
    )


def test_distilled_student_beats_the_same_student_trained_on_labels_alone(teacher, h, make_toy):
    """The teacher saw 120 clean labels; the student gets 6 labels, 2 of them wrong, plus 150
    unlabelled transfer texts that only distillation can use."""
    pad, names = teacher.tokenizer.pad_id, teacher.labels
    few = h.encode(teacher, make_toy(2, seed=31))
    few.labels[0], few.labels[1] = (few.labels[0] + 1) % 3, (few.labels[1] + 1) % 3
    transfer = Encoded(h.encode(teacher, make_toy(50, seed=32)).ids, None)
    test = h.encode(teacher, make_toy(20, seed=33))
    cfg = ModelConfig(vocab_size=teacher.config.vocab_size, num_labels=3, hidden_size=32,
                      num_layers=1, num_heads=2, ffn_size=64, max_length=32)  # fmt: skip
    torch.manual_seed(0)
    label_only = build_model(cfg)
    torch.manual_seed(0)
    student = build_model(cfg)
    tc = TrainConfig(epochs=6, batch_size=16, lr=5e-3, keep_best=False)
    fit(label_only, few, None, TrainConfig(epochs=30, batch_size=16, lr=5e-3, keep_best=False),
        label_names=names, pad_id=pad, progress=False)  # fmt: skip
    both = Encoded(few.ids + transfer.ids, None)
    _, rec = distill(teacher.model, student, both, None, tc, Distillation(alpha=0.0),
                     label_names=names, pad_id=pad)  # fmt: skip
    acc_label = evaluate(label_only, test.ids, test.labels, names, pad)["accuracy"]
    acc_kd = evaluate(student, test.ids, test.labels, names, pad)["accuracy"]
    assert rec["step"] == "distill"
    assert acc_kd >= 0.9
    assert acc_kd > acc_label + 0.1, (acc_kd, acc_label)
