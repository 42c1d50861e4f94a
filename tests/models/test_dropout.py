"""The cheap CPU dropout must be ordinary dropout: the right rate, independent elements, the
usual scaling and gradient, repeatable under a seed; and attention through it must be the same
maths as `scaled_dot_product_attention`."""

import pytest
import torch
import torch.nn.functional as F

from slimtext.models.dropout import Dropout, dropout, keep_mask
from slimtext.models.transformer import attend


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_each_element_is_kept_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    keep = keep_mask((1000, 1001), p, torch.device("cpu"))  # odd size: the last draw is cut
    n = keep.numel()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(keep.float().mean().item() - (1 - p)) < 6 * sd
    # Each of the four 16-bit lanes of a 64-bit draw is fair on its own...
    lanes = keep.flatten()[: n // 4 * 4].view(-1, 4).float()
    lane_sd = (p * (1 - p) / lanes.shape[0]) ** 0.5
    assert (lanes.mean(0) - (1 - p)).abs().max().item() < 6 * lane_sd
    # ...and neighbours (same draw or not) are uncorrelated.
    x = keep.flatten().float() - (1 - p)
    for lag in (1, 2, 3, 4, 5):
        corr = (x[:-lag] * x[lag:]).mean().item() / (p * (1 - p))
        assert abs(corr) < 6 / n**0.5, lag


def test_kept_elements_are_scaled_and_the_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 300, requires_grad=True)
    y = dropout(x, 0.25)
    kept = y != 0
    scale = 1 / (1 - round(0.25 * 65536) / 65536)
    torch.testing.assert_close(y[kept], x[kept] * scale)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * scale)


def test_bf16_input_keeps_its_dtype():
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert dropout(x, 0.1).dtype == torch.bfloat16


def test_eval_and_p_zero_are_the_identity_and_p_one_drops_all():
    x = torch.randn(5, 7)
    m = Dropout(0.3).eval()
    assert m(x) is x
    assert dropout(x, 0.0) is x
    assert torch.count_nonzero(dropout(x, 1.0)) == 0
    assert torch.count_nonzero(dropout(x, 1 - 1e-7)) == 0  # rounds to 1: no division by zero


def test_same_seed_gives_the_same_mask():
    torch.manual_seed(3)
    a = keep_mask((33, 17), 0.1, torch.device("cpu"))
    torch.manual_seed(3)
    b = keep_mask((33, 17), 0.1, torch.device("cpu"))
    assert torch.equal(a, b)
    assert not torch.equal(a, keep_mask((33, 17), 0.1, torch.device("cpu")))


def test_dropout_module_has_no_state_so_checkpoints_are_unchanged():
    assert Dropout(0.1).state_dict() == {}
    assert isinstance(Dropout(0.1), torch.nn.Dropout)


def _qkv(B=3, nh=2, T=6, hs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, nh, T, hs, generator=g) for _ in range(3))
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask[0, ..., 4:] = False
    mask[2, ..., 1:] = False
    return q, k, v, mask


def test_attention_with_dropout_is_sdpa_when_nothing_is_dropped():
    q, k, v, mask = _qkv()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    # p below 1/131,072 rounds to 0: the dropout path runs but keeps every weight.
    torch.testing.assert_close(attend(q, k, v, mask, 1e-7), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(attend(q, k, v, mask, 0.0), ref)


def test_attention_dropout_never_lets_a_masked_key_through():
    q, k, v, mask = _qkv()
    v_bad = v.clone()
    v_bad[0, :, 4:] = 1e6  # masked keys of row 0: any weight on them would show
    torch.manual_seed(0)
    out = attend(q, k, v_bad, mask, 0.5)
    assert torch.isfinite(out).all() and out[0].abs().max() < 1e3
    # Averaged over many masks, dropout leaves the expected output unchanged.
    torch.manual_seed(0)
    mean = torch.stack([attend(q, k, v, mask, 0.5) for _ in range(4000)]).mean(0)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(mean, ref, atol=0.1, rtol=0.1)


@pytest.mark.parametrize("p", [1e-5, 0.1, 0.5, 65535 / 65536])
def test_byte_mask_is_the_bool_mask_from_the_same_draws(p):
    # dropout() multiplies by a uint8 0/1 mask (faster than bool); it must keep exactly the
    # elements the bool mask keeps, so the rate tests above hold for it too.
    for dtype in (torch.uint8, torch.bfloat16, torch.float32):
        torch.manual_seed(5)
        ref = keep_mask((301, 7), p, torch.device("cpu"))
        torch.manual_seed(5)
        got = keep_mask((301, 7), p, torch.device("cpu"), dtype)
        assert got.dtype == dtype
        assert torch.equal(got.bool(), ref) and set(got.unique().tolist()) <= {0, 1}


def test_dropout_keeps_what_the_seeded_mask_keeps():
    x = torch.randn(40, 50) + 5  # no zeros of its own
    torch.manual_seed(9)
    kept = keep_mask(x.shape, 0.3, x.device)
    torch.manual_seed(9)
    assert torch.equal(dropout(x, 0.3) != 0, kept)


def test_bf16_training_attention_on_the_math_path_matches_sdpa():
    # bf16 training on short sequences skips SDPA's CPU kernel (slow backward): same outputs
    # and gradients as SDPA computed in fp32 on the same bf16 inputs, padding included.
    q, k, v, mask = _qkv(T=24)
    q, k, v = (t.bfloat16().requires_grad_() for t in (q, k, v))
    g = torch.randn(q.shape).bfloat16()
    out = attend(q, k, v, mask, 0.0)
    out.backward(g)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q32, k32, v32, attn_mask=mask)
    ref.backward(g.float())
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    for a, b in ((q, q32), (k, k32), (v, v32)):
        torch.testing.assert_close(a.grad.float(), b.grad, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("T, cls_only", [(24, False), (24, True), (400, False)])
def test_bf16_inference_attention_matches_sdpa_on_either_path(T, cls_only, monkeypatch):
    # bf16 inference takes the math path up to 384 x 384 scores (and always for one [CLS]
    # query), SDPA beyond: both must give SDPA's fp32 result on the same bf16 inputs.
    import slimtext.models.transformer as tr

    real, took = tr._math_is_faster, []
    monkeypatch.setattr(tr, "_math_is_faster", lambda *a: took.append(real(*a)) or took[-1])
    q, k, v, mask = _qkv(T=T)
    if cls_only:
        q = q[:, :, :1]
    q, k, v = (t.bfloat16() for t in (q, k, v))
    with torch.no_grad():
        out = attend(q, k, v, mask, 0.0)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    assert took == [T <= 384 or cls_only]
