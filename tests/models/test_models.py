import numpy as np
import pytest
import torch

from slimtext.models import AttentionPoolingClassifier, ModelConfig, build_model

ARCH_CONFIGS = {
    "transformer-cls": dict(arch="transformer", pooling="cls"),
    "transformer-mean": dict(arch="transformer", pooling="mean"),
    "attention": dict(arch="attention", num_layers=0),
    "attention+encoder": dict(arch="attention", num_layers=1),
    "attention+ngrams": dict(arch="attention", num_layers=0, ngram_buckets=97),
    "attention-bag": dict(arch="attention", num_layers=0, ngram_buckets=97, embeddings="bag"),
    "transformer-shared": dict(arch="transformer", share_layers=True, num_layers=3),
}


def make(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=50, num_labels=3, hidden_size=32, num_layers=2, num_heads=4,
                ffn_size=64, max_length=40, dropout=0.1)  # fmt: skip
    base.update(kw)
    return build_model(ModelConfig(**base)).eval()


def ragged_batch(lengths, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, 50, (n,), generator=g)
        ids[i, 0] = 2  # [CLS]
        mask[i, :n] = True
    return ids, mask


# The same properties on a GPU (issue #2: the same code on CPU and CUDA); CI has none.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))]  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ARCH_CONFIGS)
def test_padding_never_changes_predictions(name, device):
    model = make(**ARCH_CONFIGS[name])
    lengths = [3, 7, 12, 5]
    ids, mask = ragged_batch(lengths, 12)
    if device != "cpu":
        with torch.no_grad():
            on_cpu = torch.softmax(model(ids, mask), -1)
        model, ids, mask = model.to(device), ids.to(device), mask.to(device)
    with torch.no_grad():
        base = torch.softmax(model(ids, mask), -1)
        # Each row alone, unpadded, must match its row in the padded batch...
        for i, n in enumerate(lengths):
            alone = torch.softmax(model(ids[i : i + 1, :n], mask[i : i + 1, :n]), -1)
            torch.testing.assert_close(alone, base[i : i + 1], atol=1e-5, rtol=0)
        # ...and extra padding (with garbage ids under the mask) changes nothing either.
        big_ids = torch.cat([ids, torch.randint(5, 50, (4, 20), device=device)], dim=1)
        big_mask = torch.cat([mask, torch.zeros(4, 20, dtype=torch.bool, device=device)], dim=1)
        torch.testing.assert_close(
            torch.softmax(model(big_ids, big_mask), -1), base, atol=1e-5, rtol=0
        )
    if device != "cpu":  # and the GPU computes what the CPU does
        torch.testing.assert_close(base.cpu(), on_cpu, atol=1e-5, rtol=0)


def _packed(model, ids, mask, extra_rows=0):
    index = mask.reshape(-1).nonzero().squeeze(1)
    index = torch.cat([index, torch.zeros(extra_rows, dtype=torch.long)])  # rows computed, unread
    return model.forward_packed(ids, mask, index)


def _grouped(model, ids, mask, order, sizes, extra_rows=0):
    # The rows `order` in consecutive groups of `sizes`, each cut to its own longest text.
    masks, flat_ids, start = [], [], 0
    for n in sizes:
        rows = order[start : start + n]
        start += n
        t = int(mask[rows].sum(1).max())
        masks.append(mask[rows, :t])
        flat_ids.append(ids[rows, :t].reshape(-1))
    index = torch.cat([m.reshape(-1) for m in masks]).nonzero().squeeze(1)
    index = torch.cat([index, torch.zeros(extra_rows, dtype=torch.long)])
    return model.forward_packed(torch.cat(flat_ids), masks, index)


def _pruned_and_factorized(**kw):
    from slimtext.compress import LowRank
    from slimtext.compress.factorize import factorize_
    from slimtext.compress.prune import keep_heads_

    model = make(num_layers=3, **kw)
    keep_heads_(model.encoder.blocks[0], [1])  # 1 of 4 heads: attention width 8, not 32
    keep_heads_(model.encoder.blocks[2], [0, 3])
    factorize_(model, LowRank(only_if_smaller=False))  # every Linear -> LowRankLinear
    return model.eval()  # the new attention modules are built in training mode


PACKED_CONFIGS = {
    "cls": lambda: make(pooling="cls"),
    "mean": lambda: make(pooling="mean"),
    "shared": lambda: make(share_layers=True, num_layers=3, pooling="cls"),
    "no-layers-cls": lambda: make(num_layers=0, pooling="cls"),
    "no-layers-mean": lambda: make(num_layers=0, pooling="mean"),
    "pruned+factorized-cls": lambda: _pruned_and_factorized(pooling="cls"),
    "pruned+factorized-mean": lambda: _pruned_and_factorized(pooling="mean"),
}


@pytest.mark.parametrize("name", PACKED_CONFIGS)
def test_packed_forward_gives_forward_logits(name):
    # forward_packed is what the predictor runs: it must be forward, computed on real tokens.
    model = PACKED_CONFIGS[name]()
    ids, mask = ragged_batch([3, 12, 1, 7, 12, 2], 16, seed=1)
    with torch.no_grad():
        want = model(ids, mask)
        torch.testing.assert_close(_packed(model, ids, mask), want, atol=1e-5, rtol=0)
        # Rows added to round the packed count up are computed and never read.
        torch.testing.assert_close(_packed(model, ids, mask, 9), want, atol=1e-5, rtol=0)
        # A batch without padding, and one text alone.
        full = torch.ones_like(mask)
        torch.testing.assert_close(_packed(model, ids, full), model(ids, full), atol=1e-5, rtol=0)
        one = _packed(model, ids[1:2, :12], mask[1:2, :12])
        torch.testing.assert_close(one, want[1:2], atol=1e-5, rtol=0)
        # Groups of sequences, each padded to its own length, in any row order.
        for order, sizes in (([2, 5, 0, 3, 1, 4], [2, 2, 2]), ([4, 0, 1, 2, 3, 5], [1, 4, 1])):
            got = _grouped(model, ids, mask, order, sizes, extra_rows=3)
            torch.testing.assert_close(got, want[order], atol=1e-5, rtol=0)
    if name != "no-layers-cls":  # there every row is its [CLS] embedding: the same
        assert not torch.allclose(want[0], want[1])


@pytest.mark.parametrize("device", DEVICES)
def test_attention_pooling_gives_padding_exactly_zero_weight(device):
    model = make(arch="attention", num_layers=0).to(device)
    assert isinstance(model, AttentionPoolingClassifier)
    ids, mask = (t.to(device) for t in ragged_batch([2, 9, 4], 16))
    with torch.no_grad():
        w = model.attention_weights(ids, mask)
    assert torch.all(w[~mask] == 0.0)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, device=device))
    assert torch.all(w[mask] > 0)


@pytest.mark.parametrize("name", list(ARCH_CONFIGS))
def test_a_row_without_tokens_gives_finite_logits_and_gradients_at_any_padding(name):
    # A tokenizer brought by the user (no [UNK], no [CLS] ... [SEP] template) turns a text of
    # characters it does not know into no ids at all. Attention pooling's softmax over a row of
    # only -inf gave NaN: a batch holding such a text failed ("weights hold NaN/inf") where the
    # same text alone was answered, and training on it "diverged" (pad_rows makes a batch at
    # least one column wide: [CLS] pooling has a position 0 to read).
    model = make(**ARCH_CONFIGS[name])
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    mask = ids != 0
    with torch.no_grad():
        out = model(ids, mask)
        alone = model(ids[1:, :1], mask[1:, :1])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], alone, atol=1e-5, rtol=0)
    model.train()
    model(ids, mask).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_attention_pool_bias_has_the_attention_width():
    model = make(arch="attention", num_layers=0, attention_size=24)
    assert model.pool.proj.bias.shape == (24,)
    assert model.pool.score.weight.shape == (1, 24)


@pytest.mark.parametrize("name", ARCH_CONFIGS)
def test_same_seed_gives_same_weights_and_outputs(name):
    a, b = make(seed=7, **ARCH_CONFIGS[name]), make(seed=7, **ARCH_CONFIGS[name])
    c = make(seed=8, **ARCH_CONFIGS[name])
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], c.state_dict()[k]) for k in sa)
    ids, mask = ragged_batch([4, 6], 6)
    with torch.no_grad():
        assert torch.equal(a(ids, mask), b(ids, mask))


def test_head_width_is_hidden_size_and_output_is_num_labels():
    model = make(arch="transformer", hidden_size=48, num_heads=4, num_labels=5)
    ids, mask = ragged_batch([3, 5], 5)
    assert model.head.in_features == 48
    assert model(ids, mask).shape == (2, 5)


def test_shared_layers_use_one_block_but_apply_it_num_layers_times():
    shared = make(arch="transformer", share_layers=True, num_layers=3)
    separate = make(arch="transformer", num_layers=3)
    assert len(shared.encoder.blocks) == 1 and len(separate.encoder.blocks) == 3
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(shared) < n(separate)


CLS_CONFIGS = {
    "cls": lambda **kw: make(pooling="cls", **kw),
    "shared": lambda **kw: make(share_layers=True, num_layers=3, pooling="cls", **kw),
    "no-layers": lambda **kw: make(num_layers=0, pooling="cls", **kw),
    "pruned+factorized": lambda **kw: _pruned_and_factorized(pooling="cls", **kw),
    "checkpointed": lambda **kw: make(pooling="cls", gradient_checkpointing=True, **kw),
}


@pytest.mark.parametrize("name", CLS_CONFIGS)
def test_cls_pooling_computes_the_last_block_for_cls_only_with_the_same_result(name):
    # With [CLS] pooling, forward runs the last block for position 0 only (keys and values for
    # all): in training too, so the logits *and every gradient* must be those of the whole stack.
    ids, mask = ragged_batch([3, 12, 1, 7], 12, seed=2)
    model = CLS_CONFIGS[name](dropout=0.0).train()
    with torch.no_grad():  # larger weights than BERT's init: attention far from uniform
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    got = model(ids, mask)
    got.square().sum().backward()
    fast = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    h = model.encoder(model.embeddings(ids), mask)  # every position
    assert h.shape[:2] == ids.shape
    want = model.head(torch.tanh(model.pooler(h[:, 0])))
    want.square().sum().backward()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    slow = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert fast.keys() == slow.keys() and len(fast) == len(list(model.parameters()))
    for k in slow:  # the last block's weights too: nothing it should learn from is cut off
        torch.testing.assert_close(fast[k], slow[k], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_gradient_checkpointing_gives_the_same_gradients(pooling):
    ids, mask = ragged_batch([5, 8], 8)
    grads = []
    for ckpt in (False, True):
        m = make(seed=3, arch="transformer", dropout=0.0, gradient_checkpointing=ckpt,
                 pooling=pooling).train()  # fmt: skip
        m(ids, mask).sum().backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k])


@pytest.mark.parametrize(
    ("bad", "message"),
    [(dict(arch="rnn"), "arch"), (dict(pooling="max"), "pooling"),
     (dict(hidden_size=30, num_heads=4), "divisible"), (dict(num_labels=1), "2 labels"),
     (dict(dropout=1.5), "dropout"), (dict(ngram_buckets=1), "ngram_buckets"),
     (dict(arch="transformer", ngram_buckets=64), "attention"),
     (dict(embeddings="sum"), "embeddings"), (dict(embeddings="bag"), "attention"),
     (dict(share_layers="yes"), "share_layers must be true or false"),
     (dict(dropout="0.1"), "dropout must be a number"),
     (dict(layer_norm_eps=None), "layer_norm_eps must be a number"),
     (dict(version=2), "newer slimtext"),
     # not a version number at all: said so, not "newer" (0, "1") nor taken as 1 (true, 1.0)
     *[(dict(version=v), "version must be a positive integer")
       for v in (0, -1, 1.0, "1", True, None, np.int64(0))]],
)  # fmt: skip
def test_invalid_config_is_rejected_with_a_clear_message(bad, message):
    base = dict(vocab_size=10, num_labels=2)
    base.update(bad)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**base)


def test_bigram_ids_pair_each_token_with_the_one_before_it():
    from slimtext.models.transformer import bigram_ids

    ids = torch.tensor([[2, 7, 9, 0], [2, 9, 7, 5]])
    big = 1_000_003 * 50 + 1
    got = bigram_ids(ids, torch.arange(4), buckets=big, pad_id=0)
    prev = torch.tensor([[0, 2, 7, 9], [0, 2, 9, 7]])  # the first token pairs with padding
    want = (prev * 1_000_003 + ids + 1).masked_fill(ids == 0, 0)  # padding: row 0
    assert torch.equal(got, want)
    small = bigram_ids(ids, torch.arange(4), buckets=13, pad_id=0)
    assert small[0, 3] == 0 and small.min() >= 0 and small.max() < 13
    assert (small[ids != 0] >= 1).all()  # real tokens never share padding's row
    # Packed (N,) tokens with their positions give each token the same bucket as its row.
    flat = torch.tensor([2, 7, 9, 2, 9, 7, 5])
    pos = torch.tensor([0, 1, 2, 0, 1, 2, 3])
    assert torch.equal(bigram_ids(flat, pos, 13, 0), small[[0, 0, 0, 1, 1, 1, 1], pos])


def test_padding_puts_no_ngram_row_in_the_gradient():
    # A lazy optimizer moves every row a sparse gradient lists: padding must list none.
    m = make(arch="attention", num_layers=0, ngram_buckets=97, embeddings="bag").train()
    m.embeddings.ngram.sparse = True
    ids, mask = ragged_batch([3, 7, 12, 5], 12)
    m(ids, mask).sum().backward()
    g = m.embeddings.ngram.weight.grad.coalesce()
    from slimtext.models.transformer import bigram_ids

    real = bigram_ids(ids, torch.arange(12), 97, 0)[mask]
    assert set(g.indices()[0].tolist()) == set(real.tolist())


def test_ngram_embeddings_make_word_order_count():
    # Same tokens, two orders, positions switched off (all zero): a bag of token embeddings
    # cannot tell them apart; with bigram buckets it must.
    ids = torch.tensor([[2, 5, 6, 7, 8], [2, 8, 7, 6, 5]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    for buckets, differ in ((0, False), (97, True)):
        m = make(arch="attention", num_layers=0, ngram_buckets=buckets, dropout=0.0)
        with torch.no_grad():
            m.embeddings.pos.weight.zero_()
            a, b = m(ids, mask)
        assert (not torch.allclose(a, b, atol=1e-6)) == differ, buckets


def test_bag_embeddings_have_no_positions_and_no_norm():
    m = make(arch="attention", num_layers=0, ngram_buckets=97, embeddings="bag", dropout=0.0)
    names = {n for n, _ in m.named_parameters()}
    assert not any(n.startswith(("embeddings.pos", "embeddings.norm")) for n in names), names
    ids = torch.tensor([[2, 5, 6, 7]])
    from slimtext.models.transformer import bigram_ids

    e = m.embeddings
    want = e.tok(ids) + e.ngram(bigram_ids(ids, torch.arange(4), 97, 0))
    torch.testing.assert_close(e(ids), want)


@pytest.mark.parametrize(
    "bad",
    [dict(num_heads=0), dict(num_layers=-2), dict(ffn_size=0), dict(attention_size=-3),
     dict(layer_norm_eps=-1.0), dict(pad_id=500)],
)  # fmt: skip
def test_model_config_rejects_shapes_that_cannot_be_built(bad):
    from slimtext.models import ModelConfig

    with pytest.raises(ValueError, match=next(iter(bad))):
        ModelConfig(vocab_size=200, num_labels=2, **bad)
