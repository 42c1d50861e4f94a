from __future__ import annotations

import pytest
import torch

import slimtext
from slimtext.artifact import save_model_dir
from slimtext.compress import DropLayers, LowRank, LowRankLinear, drop_layers_, factorize_
from slimtext.compress._util import count_params
from slimtext.compress.factorize import every_other


def test_low_rank_at_full_energy_reproduces_outputs(teacher, batches, h):
    m = teacher.model
    ref = h.logits(m, batches)
    rec = factorize_(m, LowRank(energy=1.0, only_if_smaller=False))
    assert rec["ranks"] and isinstance(m.encoder.blocks[0].ffn_in, LowRankLinear)
    torch.testing.assert_close(h.logits(m, batches), ref, atol=1e-4, rtol=1e-4)


def test_low_rank_shrinks_and_round_trips(teacher, batches, h, tmp_path):
    m = teacher.model
    n = count_params(m)
    rec = factorize_(m, LowRank(energy=0.5))
    assert count_params(m) < n
    out = h.logits(m, batches)
    save_model_dir(tmp_path / "f", m, m.config, teacher.tokenizer, teacher.labels,
                   max_length=teacher.max_length, compression=[rec])  # fmt: skip
    torch.testing.assert_close(h.logits(slimtext.load(tmp_path / "f").model, batches), out)


def test_dropping_layers_round_trips_through_the_config(teacher, batches, h, tmp_path):
    m = teacher.model
    rec = drop_layers_(m, DropLayers((1,)))
    assert m.config.num_layers == 1 and len(m.encoder.blocks) == 1
    out = h.logits(m, batches)
    save_model_dir(tmp_path / "d", m, m.config, teacher.tokenizer, teacher.labels,
                   max_length=teacher.max_length, compression=[rec])  # fmt: skip
    torch.testing.assert_close(h.logits(slimtext.load(tmp_path / "d").model, batches), out)


def test_configs_validate():
    with pytest.raises(ValueError):
        LowRank(energy=0.0)
    with pytest.raises(ValueError):
        DropLayers(())
    with pytest.raises(ValueError, match="keep at least one layer, got n_keep=0"):
        every_other(4, 0)
    assert every_other(4, 2) == (1, 3) and every_other(2, 5) == (0, 1)
