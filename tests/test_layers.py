"""Tests of minimoe/layers.py: attention math against PyTorch's fused kernel, and mask properties.

Oracles: `attention` (explicit einops) equals `F.scaled_dot_product_attention` in float64 to
1e-12; `make_mask` equals a double loop. Properties: changing a future target token never
changes earlier decoder outputs; changing a padded source token never changes real outputs;
permuting the batch permutes the outputs; fully padded rows give finite values and gradients.

Exercise tests carry `ex1_1` / `ex1_2`; tests of whole layers need both exercises and carry
only the umbrella `exercise` marker. Run: `python -m pytest tests/test_layers.py -q`
(a CUDA-only check is skipped without a GPU).
"""

import pytest
import torch
import torch.nn.functional as F

from minimoe import layers
from minimoe.config import ModelConfig
from minimoe.errors import ConfigError
from minimoe.layers import DecoderLayer, EncoderLayer, MultiHeadAttention, attention, make_mask

TOL = dict(atol=1e-12, rtol=0)  # float64: any real masking or math bug is far above this


def key_mask(lengths, t, s, causal):
    """Hand-built mask oracle [b 1 t s]: key j < length, and j <= i if causal."""
    j = torch.arange(s)
    mask = torch.stack([j < n for n in lengths])[:, None, None, :].expand(-1, 1, t, s)
    if causal:
        mask = mask & (j[None, :] <= torch.arange(t)[:, None])
    return mask


def qkv(b=3, h=2, t=5, s=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, k, generator=g, dtype=torch.float64) for n in (t, s, s)]


def tiny_layer(kind, fused="off", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=16, n_heads=2, d_ff=32, fused_attention=fused)
    return kind(cfg).double().eval()


def layer_inputs(b=3, t=5, s=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 16, generator=g, dtype=torch.float64)
    memory = torch.randn(b, s, 16, generator=g, dtype=torch.float64)
    src_pad = torch.arange(s)[None, :] < torch.tensor([s, 4, 2])[:b, None]  # [b s], True = real
    return x, memory, src_pad


def run(layer, x, memory, src_pad):
    if isinstance(layer, DecoderLayer):
        return layer(x, memory, src_pad=src_pad)
    return layer(memory, src_pad=src_pad)  # the encoder reads the source


# --- exercise 1.1: attention ---------------------------------------------------------------

@pytest.mark.ex1_1
@pytest.mark.exercise
@pytest.mark.parametrize("t,s,causal", [(5, 5, True), (5, 5, False), (4, 6, False)])
def test_attention_matches_sdpa(t, s, causal):
    q, k, v = qkv(t=t, s=s)
    mask = key_mask([s, 3, 1], t, s, causal)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention(q, k, v, mask), expected, **TOL)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), **TOL)


@pytest.mark.ex1_1
@pytest.mark.exercise
def test_attention_fully_masked_row_gives_zeros_not_nan():
    q, k, v = qkv()
    for tensor in (q, k, v):
        tensor.requires_grad_(True)
    mask = key_mask([5, 0, 2], 5, 5, causal=False)  # row 1: nothing to attend to
    out = attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # as SDPA defines it
    out.square().sum().backward()
    assert all(torch.isfinite(tensor.grad).all() for tensor in (q, k, v))


@pytest.mark.ex1_1
@pytest.mark.exercise
def test_multi_head_attention_fused_on_equals_off():
    torch.manual_seed(0)
    explicit = MultiHeadAttention(16, 4, fused="off").double()
    fused = MultiHeadAttention(16, 4, fused="on").double()
    fused.load_state_dict(explicit.state_dict())
    x, memory, _ = layer_inputs()
    self_mask = key_mask([5, 3, 1], 5, 5, causal=True)
    cross_mask = key_mask([6, 4, 2], 5, 6, causal=False)
    torch.testing.assert_close(explicit(x, mask=self_mask), fused(x, mask=self_mask), **TOL)
    torch.testing.assert_close(explicit(x, memory, cross_mask), fused(x, memory, cross_mask), **TOL)


@pytest.mark.cuda
@pytest.mark.ex1_1
@pytest.mark.exercise
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fused_matches_explicit():
    q, k, v = [tensor.cuda().float() for tensor in qkv(b=4, h=2, t=8, s=8, k=16)]
    mask = key_mask([8, 5, 3, 1], 8, 8, causal=True).cuda()
    # float32 on GPU (TF32 and fused kernels reorder sums): 1e-5 is tight for O(1) values
    torch.testing.assert_close(layers.fused_attention(q, k, v, mask), attention(q, k, v, mask),
                               atol=1e-5, rtol=1e-5)


# --- exercise 1.2: make_mask -----------------------------------------------------------------

@pytest.mark.ex1_2
@pytest.mark.exercise
@pytest.mark.parametrize("t,s,causal,padded", [(4, 4, True, True), (4, 4, True, False),
                                                (3, 5, False, True)])
def test_make_mask_matches_loop(t, s, causal, padded):
    src_pad = torch.tensor([[1] * s, [1, 1] + [0] * (s - 2)], dtype=torch.bool) if padded else None
    mask = make_mask(src_pad, t, s, causal)
    assert mask.dtype == torch.bool and mask.shape == (2 if padded else 1, 1, t, s)
    for b in range(2):
        for i in range(t):
            for j in range(s):
                allowed = (src_pad is None or bool(src_pad[b, j])) and (not causal or j <= i)
                assert bool(mask[min(b, mask.shape[0] - 1), 0, i, j]) == allowed


@pytest.mark.ex1_2
@pytest.mark.exercise
def test_make_mask_none_when_nothing_to_mask():
    assert make_mask(None, 4, 6, causal=False) is None


# --- plumbing (no exercise needed) -----------------------------------------------------------

@pytest.mark.parametrize("fused,expect", [("off", "explicit"), ("auto", "fused"), ("on", "fused")])
def test_fused_flag_picks_the_path(monkeypatch, fused, expect):
    calls = []
    record = lambda name: lambda q, k, v, mask, dropout_p: calls.append(name) or q  # noqa: E731
    monkeypatch.setattr(layers, "attention", record("explicit"))
    monkeypatch.setattr(layers, "fused_attention", record("fused"))
    MultiHeadAttention(8, 2, fused=fused)(torch.randn(2, 3, 8))  # CPU: auto = fused (layers.FUSED_AUTO_DEVICES)
    assert calls == [expect]


def test_bad_fused_value_is_a_config_error():
    with pytest.raises(ConfigError, match="fused"):
        MultiHeadAttention(8, 2, fused="yes")


# --- whole layers: properties ----------------------------------------------------------------

@pytest.mark.exercise
@pytest.mark.parametrize("fused", ["off", "on"])
def test_decoder_is_causal(fused):
    layer = tiny_layer(DecoderLayer, fused)
    x, memory, src_pad = layer_inputs()
    before = layer(x, memory, src_pad=src_pad)
    for j in range(x.shape[1]):
        changed = x.clone()
        changed[:, j] += 1.0  # change target token j everywhere in the batch
        after = layer(changed, memory, src_pad=src_pad)
        torch.testing.assert_close(after[:, :j], before[:, :j], **TOL)
        assert not torch.allclose(after[:, j:], before[:, j:])  # the test can fail


@pytest.mark.exercise
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
@pytest.mark.parametrize("fused", ["off", "on"])
def test_padded_source_tokens_change_nothing(kind, fused):
    layer = tiny_layer(kind, fused)
    x, memory, src_pad = layer_inputs()
    before = run(layer, x, memory, src_pad)
    changed = torch.where(src_pad[..., None], memory, memory + 5.0)  # only padded positions move
    after = run(layer, x, changed, src_pad)
    if kind is EncoderLayer:  # outputs at real positions must not move; padded ones may
        real = src_pad[..., None].expand_as(before)
        torch.testing.assert_close(after[real], before[real], **TOL)
        assert not torch.allclose(run(layer, x, changed, None), before)  # unmasked: it does move
    else:
        torch.testing.assert_close(after, before, **TOL)
        assert not torch.allclose(run(layer, x, changed, None), run(layer, x, memory, None))


@pytest.mark.exercise
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
def test_permuting_the_batch_permutes_outputs(kind):
    layer = tiny_layer(kind)
    x, memory, src_pad = layer_inputs()
    perm = torch.tensor([2, 0, 1])
    out = run(layer, x, memory, src_pad)
    torch.testing.assert_close(run(layer, x[perm], memory[perm], src_pad[perm]), out[perm], **TOL)


@pytest.mark.exercise
@pytest.mark.parametrize("kind", [EncoderLayer, DecoderLayer])
@pytest.mark.parametrize("fused", ["off", "on"])
def test_fully_padded_rows_stay_finite(kind, fused):
    layer = tiny_layer(kind, fused)
    x, memory, src_pad = layer_inputs()
    src_pad[1] = False  # an empty source: every key of row 1 is padding
    x.requires_grad_(True)
    memory.requires_grad_(True)
    out = run(layer, x, memory, src_pad)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
    assert torch.isfinite(memory.grad).all()
