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


def _last_hidden(model, batches):
    from slimtext.compress._util import blocks

    out = []
    hook = blocks(model)[-1].register_forward_hook(lambda m, a, o: out.append(o))
    model.eval()
    with torch.no_grad():
        for b in batches:
            model(b.input_ids, b.attention_mask)
    hook.remove()
    return torch.cat([o[b.attention_mask.bool()] for o, b in zip(out, batches, strict=True)])


def _probe_mse(h_student, h_teacher) -> float:
    """MSE of the best affine map student -> teacher states (least squares on the same data):
    the fairest reading for a student that never saw a projection."""
    X = torch.cat([h_student, torch.ones(len(h_student), 1)], 1)
    A = torch.linalg.lstsq(X, h_teacher).solution
    return float((X @ A - h_teacher).pow(2).mean())


def test_intermediate_losses_pull_the_students_layers_to_the_teachers(teacher, h, make_toy):
    from slimtext.compress.distill import IntermediateLoss

    pad, names = teacher.tokenizer.pad_id, teacher.labels
    train = h.encode(teacher, make_toy(30, seed=61))
    held = h.batches_of(teacher, make_toy(15, seed=62))
    cfg = ModelConfig(vocab_size=teacher.config.vocab_size, num_labels=3, hidden_size=32,
                      num_layers=1, num_heads=2, ffn_size=64, max_length=32)  # fmt: skip
    tc = TrainConfig(epochs=4, batch_size=16, lr=5e-3, keep_best=False)
    h_t = _last_hidden(teacher.model, held)
    students = {}
    for name, dc in [("logits", Distillation(alpha=0.0)),
                     ("hidden", Distillation(alpha=0.0, hidden=1.0)),
                     ("attention", Distillation(alpha=0.0, attention=1.0))]:  # fmt: skip
        torch.manual_seed(0)
        s = build_model(cfg)
        distill(teacher.model, s, train, None, tc, dc, label_names=names, pad_id=pad)
        assert not any(k.startswith("distill_intermediate") for k in s.state_dict()), name
        students[name] = s
    probe = {k: _probe_mse(_last_hidden(s, held), h_t) for k, s in students.items()}
    assert probe["hidden"] < 0.5 * probe["logits"], probe

    def attention_kl(s) -> float:  # teacher layer 1 <-> student layer 0, head-averaged
        m = IntermediateLoss(teacher.model, s, Distillation(attention=1.0))
        s.eval()
        with torch.no_grad():
            kls = []
            for b in held:
                s(b.input_ids, b.attention_mask)
                kls.append(float(m(b)))
        m.remove()
        return float(np.mean(kls))

    kl = {k: attention_kl(s) for k, s in students.items()}
    assert kl["attention"] < 0.5 * kl["logits"], kl


def test_intermediate_losses_need_the_teacher_model_not_its_logits(teacher, h, make_toy):
    data = h.encode(teacher, make_toy(2, seed=63))
    soft = np.zeros((len(data), 3), np.float32)
    with pytest.raises(ValueError, match="teacher model"):
        distill(soft, make_student(teacher.model), data, None, TrainConfig(epochs=1),
                Distillation(hidden=1.0), label_names=teacher.labels,
                pad_id=teacher.tokenizer.pad_id)  # fmt: skip
    with pytest.raises(ValueError, match="layer_map"):
        from slimtext.compress.distill import IntermediateLoss

        IntermediateLoss(teacher.model, make_student(teacher.model, num_layers=1),
                         Distillation(hidden=1.0, layer_map=(5,)))  # fmt: skip


def test_intermediate_losses_of_a_cls_pooled_model_compare_the_states_it_computes(teacher, h):
    """With pooling="cls" (every model initialised from a Hugging Face checkpoint) the last
    block computes position 0 only, (B, 1, C): the hidden-state loss crashed on its shape, or,
    mapped to a teacher layer of full length, broadcast one [CLS] state against every token."""
    from dataclasses import replace

    from slimtext.compress import DropLayers, drop_layers_
    from slimtext.compress.distill import IntermediateLoss

    torch.manual_seed(0)
    t = build_model(replace(teacher.config, pooling="cls")).eval()
    b = h.batches_of(teacher, h.toy(3, seed=64), n_batches=1)[0]
    first = make_student(t, num_layers=2)
    drop_layers_(first, DropLayers((0,)))  # a copy of block 0 alone
    for s, layer_map in ((make_student(t, num_layers=2), None), (first, (0,))):
        # each student layer is a copy of the teacher layer it maps to: nothing to pull
        m = IntermediateLoss(t, s, Distillation(hidden=1.0, attention=1.0, layer_map=layer_map))
        s.eval()
        with torch.no_grad():
            s(b.input_ids, b.attention_mask)
            assert float(m(b)) == pytest.approx(0.0, abs=1e-6), layer_map
        m.remove()
    # and distillation with both losses trains such a student
    data = h.encode(teacher, h.toy(4, seed=65))
    distill(t, make_student(t, num_layers=1), data, None, TrainConfig(epochs=1, batch_size=8),
            Distillation(hidden=1.0, attention=1.0), label_names=teacher.labels,
            pad_id=teacher.tokenizer.pad_id)  # fmt: skip


def test_the_label_term_weighs_each_row_by_its_class_as_training_does():
    from slimtext.train.trainer import weighted_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(4, 3)
    b = pad_batch([[1, 2]] * 4, [0, 1, 2, 3], 0, [0, 1, 2, 0])
    soft = logits.numpy().copy()
    weight = torch.tensor([1.0, 4.0, 0.5])
    loss = distillation_loss(soft, Distillation(alpha=1.0), weight=weight)(logits, b)
    rows = F.cross_entropy(logits, b.labels, reduction="none") * weight[b.labels]
    torch.testing.assert_close(loss, rows.mean())
    torch.testing.assert_close(loss, weighted_cross_entropy(logits, b.labels, weight))


@pytest.mark.parametrize("weighted", [False, True])
def test_transfer_rows_take_the_soft_term_only_and_every_row_counts_the_same(weighted):
    """A batch of labelled rows and unlabelled transfer rows (label IGNORE_LABEL): each row's
    loss is alpha * w_y * CE + (1 - alpha) * T^2 * KL, a transfer row's only the soft term, and
    the loss is the mean over all the batch's rows (the hard term was dropped for every row
    when transfer texts were added, or, with ignored labels, averaged over labelled rows)."""
    from slimtext.train.trainer import IGNORE_LABEL

    torch.manual_seed(0)
    logits, teacher = torch.randn(5, 3), torch.randn(5, 3)
    y = [0, IGNORE_LABEL, 2, IGNORE_LABEL, 1]
    b = pad_batch([[1, 2]] * 5, [4, 1, 0, 3, 2], 0, y)
    weight = torch.tensor([1.0, 4.0, 0.5]) if weighted else None
    a, T = 0.7, 2.0
    loss = distillation_loss(teacher.numpy(), Distillation(alpha=a, temperature=T),
                             weight=weight)(logits[b.index], b)  # fmt: skip
    want = []
    for i in range(5):
        p_t = F.softmax(teacher[i] / T, -1)
        kl = (p_t * (p_t.log() - F.log_softmax(logits[i] / T, -1))).sum()
        row = (1 - a) * T * T * kl
        if y[i] != IGNORE_LABEL:
            ce = F.cross_entropy(logits[i : i + 1], torch.tensor([y[i]]))
            row = row + a * (1.0 if weight is None else weight[y[i]]) * ce
        want.append(row)
    torch.testing.assert_close(loss, torch.stack(want).mean())


def test_distill_keeps_the_labels_of_labelled_rows_beside_transfer_rows(teacher, h, make_toy):
    """Ignored labels (transfer rows) break neither "balanced" class weights (counted over the
    labelled rows) nor the record, which tells the alpha used."""
    from slimtext.train.trainer import IGNORE_LABEL, class_weights

    pad, names = teacher.tokenizer.pad_id, teacher.labels
    few = h.encode(teacher, make_toy(4, seed=51))
    more = h.encode(teacher, make_toy(3, seed=52)).ids
    both = Encoded(few.ids + more, few.labels + [IGNORE_LABEL] * len(more))
    torch.testing.assert_close(class_weights("balanced", both.labels, names),
                               class_weights("balanced", few.labels, names))  # fmt: skip
    student = make_student(teacher.model, num_layers=1)
    tc = TrainConfig(max_steps=2, batch_size=8, class_weight="balanced", keep_best=False)
    _, rec = distill(teacher.model, student, both, None, tc, Distillation(alpha=0.7),
                     label_names=names, pad_id=pad)  # fmt: skip
    assert rec["config"]["alpha"] == 0.7
