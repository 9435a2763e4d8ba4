"""Tests of rggan.networks: shapes, value ranges, compositing, size validation, init, parameter counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rggan.networks import (
    DiscriminatorOutput,
    GeneratorOutput,
    RGDiscriminator,
    RGGenerator,
    init_weights,
    parameter_table,
)
from rggan.networks.generator import SynthesisBlock, adain, calc_mean_std

GENES = 12


def _inputs(batch: int, genes: int, latent: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rna = torch.randn(batch, genes, generator=g)
    z = torch.randn(batch, latent, generator=g)
    base = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
    return rna, z, base


def _small_g(size: int = 32, g_n_feat: int = 4, **kw) -> RGGenerator:
    net = RGGenerator(GENES, embed_dim=16, latent_size=5, g_n_feat=g_n_feat, image_size=size, **kw)
    net.apply(init_weights)
    return net


@pytest.mark.parametrize(
    "size,g_n_feat,embed_dim,latent", [(32, 4, 16, 5), (64, 8, 16, 5), (128, 4, 16, 5), (32, 32, 128, 10)]
)
def test_generator_shapes_and_ranges(size, g_n_feat, embed_dim, latent):
    torch.manual_seed(0)
    net = RGGenerator(GENES, embed_dim=embed_dim, latent_size=latent, g_n_feat=g_n_feat, image_size=size)
    net.apply(init_weights)
    assert net.code_kernel == size // 16
    rna, z, base = _inputs(3, GENES, latent, size)
    out = net(rna, z, base)
    assert isinstance(out, GeneratorOutput)
    assert out.embedding.shape == (3, embed_dim)
    assert out.image.shape == out.mask.shape == out.alpha.shape == (3, 1, size, size)
    assert out.switch.shape == (3, 1, size // 2, size // 2)
    assert torch.isfinite(out.embedding).all()
    # image is a convex combination of base and tanh foreground, both in [-1, 1]
    assert out.image.abs().max() <= 1.0 and out.mask.abs().max() <= 1.0
    assert 0.0 <= out.switch.min() and out.switch.max() <= 1.0
    assert 0.0 <= out.alpha.min() and out.alpha.max() <= 1.0
    torch.testing.assert_close(out.alpha, (out.mask + 1) / 2)


def test_generator_prototype_defaults_forward():
    """The prototype's full size (5,172 genes, 128², g=32) runs; batch 1 works in eval mode."""
    torch.manual_seed(0)
    net = RGGenerator(5172)
    net.apply(init_weights)
    assert (net.embed_dim, net.latent_size, net.g_n_feat, net.code_kernel, net.image_size) == (128, 10, 32, 8, 128)
    rna, z, base = _inputs(2, 5172, 10, 128)
    with torch.no_grad():
        out = net(rna, z, base)
        assert out.embedding.shape == (2, 128) and out.switch.shape == (2, 1, 64, 64)
        net.eval()
        one = net(rna[:1], z[:1], base[:1])
    assert one.image.shape == (1, 1, 128, 128)


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("kernel_size", [3, 4])
def test_discriminator_shapes(size, kernel_size):
    torch.manual_seed(0)
    d = RGDiscriminator(embed_dim=16, d_n_feat=8, image_size=size, kernel_size=kernel_size)
    d.apply(init_weights)
    x = torch.rand(4, 1, size, size) * 2 - 1
    m = torch.sign(torch.randn(4, 1, size, size))
    out = d(x, m, torch.randn(4, 16))
    assert isinstance(out, DiscriminatorOutput)
    for logits in (out.isc, out.i, out.is_):
        assert logits.shape == (4,) and torch.isfinite(logits).all()
    # every encoder halves exactly: S -> S/16
    assert d.i_path(x).shape == (4, 64, size // 16, size // 16)


def test_discriminator_heads_use_their_inputs():
    """I ignores the mask and the embedding; IS ignores the embedding; ISC sees all three."""
    torch.manual_seed(0)
    d = RGDiscriminator(embed_dim=16, d_n_feat=8, image_size=32).eval()
    x, m, e = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), torch.randn(2, 16)
    with torch.no_grad():
        ref = d(x, m, e)
        other_mask = d(x, -m, e)
        other_e = d(x, m, e + 1)
    torch.testing.assert_close(other_mask.i, ref.i, rtol=0, atol=0)
    assert not torch.allclose(other_mask.is_, ref.is_) and not torch.allclose(other_mask.isc, ref.isc)
    torch.testing.assert_close(other_e.i, ref.i, rtol=0, atol=0)
    torch.testing.assert_close(other_e.is_, ref.is_, rtol=0, atol=0)
    assert not torch.allclose(other_e.isc, ref.isc)


@pytest.mark.parametrize("bad", [16, 48, 100, 0, -64, 8])
def test_image_size_must_be_power_of_two_at_least_32(bad):
    with pytest.raises(ValueError, match="power of two"):
        RGGenerator(GENES, image_size=bad)
    with pytest.raises(ValueError, match="power of two"):
        RGDiscriminator(image_size=bad)


def test_size_validation_errors():
    with pytest.raises(ValueError, match="code_kernel must equal image_size // 16 = 4"):
        RGGenerator(GENES, image_size=64, code_kernel=8)
    with pytest.raises(ValueError, match="code_kernel"):
        RGDiscriminator(image_size=128, code_kernel=4)
    assert RGGenerator(GENES, g_n_feat=2, image_size=64, code_kernel=4).code_kernel == 4
    with pytest.raises(ValueError, match="kernel_size"):
        RGDiscriminator(kernel_size=5)
    with pytest.raises(ValueError, match="num_genes"):
        RGGenerator(0)
    with pytest.raises(ValueError, match="g_n_feat"):
        RGGenerator(GENES, g_n_feat=0)
    net = _small_g()
    rna, z, base = _inputs(2, GENES, 5, 32)
    with pytest.raises(ValueError, match="rna"):
        net(rna[:, :-1], z, base)
    with pytest.raises(ValueError, match="z must be"):
        net(rna, z[:, :-1], base)
    with pytest.raises(ValueError, match="base"):
        net(rna, z, base[..., :16, :16])
    d = RGDiscriminator(embed_dim=16, d_n_feat=8, image_size=32)
    with pytest.raises(ValueError, match="embedding"):
        d(base, base, torch.zeros(2, 15))


def _force_head(net: RGGenerator, fg: float | None, t: float):
    """Forward hook replacing the head's tanh output: channel 0 (foreground) and channel 1 (mask)."""

    def hook(module, args, out):
        out = out.clone()
        if fg is not None:
            out[:, 0] = fg
        out[:, 1] = t
        return out

    return net.head.register_forward_hook(hook)


def test_compositing_keeps_base_exactly_where_alpha_is_zero():
    net = _small_g()
    rna, z, base = _inputs(2, GENES, 5, 32)
    handle = _force_head(net, fg=None, t=-1.0)
    out = net(rna, z, base)
    handle.remove()
    assert torch.equal(out.alpha, torch.zeros_like(out.alpha))
    assert torch.equal(out.image, base)  # bit-exact: no background pixel is altered
    handle = _force_head(net, fg=0.25, t=1.0)
    out = net(rna, z, base)
    handle.remove()
    assert torch.equal(out.image, torch.full_like(base, 0.25))  # alpha 1: the generated pixel only


def test_double_tanh_reproduces_prototype_alpha_range():
    net = _small_g(double_tanh=True)
    rna, z, base = _inputs(2, GENES, 5, 32)
    lo, hi = (torch.tanh(torch.tensor(-1.0)) + 1) / 2, (torch.tanh(torch.tensor(1.0)) + 1) / 2
    assert 0.1192 < lo < 0.1193 and 0.8807 < hi < 0.8808
    for t, expected in ((-1.0, lo), (1.0, hi)):
        handle = _force_head(net, fg=0.5, t=t)
        out = net(rna, z, base)
        handle.remove()
        torch.testing.assert_close(out.alpha, torch.full_like(out.alpha, expected.item()))
        torch.testing.assert_close(out.image, base * (1 - expected) + 0.5 * expected)
        assert torch.equal(out.mask, torch.full_like(out.mask, t))  # the mask output stays the raw channel
    out = net(rna, z, base)
    assert lo - 1e-6 <= out.alpha.min() and out.alpha.max() <= hi + 1e-6


def test_calc_mean_std_and_adain():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7) * 3 + 1
    mean, std = calc_mean_std(x)
    torch.testing.assert_close(mean, x.mean(dim=(2, 3), keepdim=True))
    torch.testing.assert_close(std, (x.flatten(2).var(dim=2, unbiased=True) + 1e-5).sqrt()[..., None, None])
    style = torch.randn(2, 3, 2, 2) * 0.5 - 2  # k x k style map, as at every scale
    y = adain(x, style)
    y_mean, y_std = calc_mean_std(y, eps=0)
    s_mean, s_std = calc_mean_std(style)
    torch.testing.assert_close(y_mean, s_mean)
    torch.testing.assert_close(y_std, s_std, rtol=1e-4, atol=1e-4)


def test_synthesis_switch_routes_skip():
    """With the switch saturated at 1 the block output is the skip exactly (the stage-1 code map)."""
    net = _small_g()
    block = net.synthesis_blocks[0]
    nn.init.zeros_(block.convs[1].adn.N.weight)  # h = BN bias only
    with torch.no_grad():
        block.convs[1].adn.N.bias[block.channels :] = 50.0  # m = 50 -> s = 1
    x, skip, style = torch.randn(2, 64, 2, 2), torch.randn(2, 64, 2, 2), torch.randn(2, 64, 2, 2)
    out, s = block(x, skip, style)
    assert torch.equal(s, torch.ones_like(s))
    # AdaIN of an all-zero content is the style mean (plus 0 * std): out = skip + style mean
    torch.testing.assert_close(out, skip + style.mean(dim=(2, 3), keepdim=True))


def _saved_bytes(fn):
    """Run ``fn`` and return (its result, bytes of the distinct storages autograd saved for backward)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def test_synthesis_block_recomputes_its_elementwise_part_exactly(monkeypatch):
    """Training mode recomputes switch + AdaIN of a large block in backward: same outputs and gradients, far
    less kept; a block below ``CHECKPOINT_MIN_NUMEL`` keeps its intermediates."""
    import rggan.networks.generator as generator

    torch.manual_seed(0)
    block = SynthesisBlock(8).apply(init_weights).train()
    state = {k: v.clone() for k, v in block.state_dict().items()}
    inputs = [torch.randn(4, 8, 16, 16, requires_grad=True) for _ in range(3)]  # x, skip, style

    def run(forward):
        block.load_state_dict(state)  # same BatchNorm running statistics for both runs
        block.zero_grad(set_to_none=True)
        for t in inputs:
            t.grad = None
        (out, s), saved = _saved_bytes(lambda: forward(*inputs))
        (out.square().sum() + s.sum()).backward()
        grads = [t.grad.clone() for t in inputs] + [p.grad.clone() for p in block.parameters()]
        return out.detach(), s.detach(), grads, saved, [b.clone() for b in block.buffers()]

    plain = run(lambda x, skip, style: block._mix(block.convs(x), skip, style))
    kept = run(block)  # 4 x 16 x 16 x 16 elements in h: below the threshold
    assert kept[3] == plain[3] and torch.equal(kept[0], plain[0])
    monkeypatch.setattr(generator, "CHECKPOINT_MIN_NUMEL", 4 * 16 * 16 * 16)
    recomputed = run(block)
    assert torch.equal(plain[0], recomputed[0]) and torch.equal(plain[1], recomputed[1])
    assert all(torch.equal(a, b) for a, b in zip(plain[2], recomputed[2]))
    assert all(torch.equal(a, b) for a, b in zip(plain[4], recomputed[4]))  # BN statistics updated once
    assert recomputed[3] < 0.7 * plain[3], (recomputed[3], plain[3])  # measured 0.66: the convs keep theirs
    block.eval()  # no recomputation outside training (export, inference): same values
    with torch.no_grad():
        torch.testing.assert_close(block(*inputs)[0], block._mix(block.convs(inputs[0]), *inputs[1:])[0])


def test_same_seed_same_outputs():
    def run(seed):
        torch.manual_seed(seed)
        g = _small_g(size=64)
        d = RGDiscriminator(embed_dim=16, d_n_feat=8, image_size=64)
        d.apply(init_weights)
        rna, z, base = _inputs(2, GENES, 5, 64, seed=seed)
        out = g(rna, z, base)
        return out, d(out.image, out.mask, out.embedding)

    (g1, d1), (g2, d2), (g3, _) = run(7), run(7), run(8)
    for name in ("embedding", "image", "mask", "switch", "alpha"):
        assert torch.equal(getattr(g1, name), getattr(g2, name))
    for name in ("isc", "i", "is_"):
        assert torch.equal(getattr(d1, name), getattr(d2, name))
    assert not torch.equal(g1.image, g3.image)


def test_init_weights_dcgan_statistics():
    torch.manual_seed(0)
    g = RGGenerator(200, g_n_feat=8, image_size=64)
    g.apply(init_weights)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    norms = [m for m in g.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    w = torch.cat([m.weight.flatten() for m in convs])
    nw = torch.cat([m.weight.flatten() for m in norms])
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3
    assert abs(nw.mean() - 1) < 2e-3 and abs(nw.std() - 0.02) < 2e-3
    biases = [m.bias for m in convs + norms if m.bias is not None]
    assert biases and all(torch.equal(b, torch.zeros_like(b)) for b in biases)


def test_every_parameter_is_used():
    """No dead modules (the prototype's fc0 / image-stage FC): every parameter gets a gradient."""
    torch.manual_seed(0)
    g = _small_g()
    d = RGDiscriminator(embed_dim=16, d_n_feat=8, image_size=32, kernel_size=4)
    d.apply(init_weights)
    out = g(*_inputs(2, GENES, 5, 32))
    logits = d(out.image, out.mask, out.embedding)
    (logits.isc.sum() + logits.i.sum() + logits.is_.sum() + out.image.sum() + out.switch.sum()).backward()
    for name, p in list(g.named_parameters()) + list(d.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_output_detach():
    out = _small_g()(*_inputs(2, GENES, 5, 32))
    assert out.image.requires_grad
    det = out.detach()
    assert not any(getattr(det, n).requires_grad for n in ("embedding", "image", "mask", "switch", "alpha"))
    assert torch.equal(det.image, out.image)


# Reference counts at the prototype's sizes (bundle/docs/README.md, network table): G 43.43 M used parameters
# (EC 2.71 M, FC4..FC1 17.20 M, background encoder 1.57 M, synthesis 18.81 M, upsamplers 3.14 M, head 576);
# D 6.15 M with 3x3 kernels, 8.56 M with 4x4.
EXPECTED = {
    "generator.gene_encoder": 2_713_600,
    "generator.code_projections": 17_203_200,
    "generator.background_encoder": 1_569_984,
    "generator.synthesis_blocks": 18_808_320,
    "generator.upsample_blocks": 3_135_360,
    "generator.head": 576,
    "generator": 43_431_040,
    "discriminator.i_path": 1_550_656,
    "discriminator.is_path": 1_551_232,
    "discriminator.isc_joint": 2_950_144,
    "discriminator.heads": 98_307,
    "discriminator": 6_150_339,
}


def test_parameter_counts_match_prototype():
    table = dict(parameter_table())
    assert table == EXPECTED
    assert abs(table["generator"] - 43.43e6) < 0.01e6
    assert abs(table["discriminator"] - 6.15e6) < 0.01e6
    assert sum(v for k, v in table.items() if k.startswith("generator.")) == table["generator"]
    assert sum(v for k, v in table.items() if k.startswith("discriminator.")) == table["discriminator"]
    d4 = dict(parameter_table(d_kernel_size=4))
    assert abs(d4["discriminator"] - 8.56e6) < 0.01e6 and d4["generator"] == EXPECTED["generator"]


def test_parameter_table_matches_real_modules():
    sizes = dict(embed_dim=16, latent_size=5, g_n_feat=4, d_n_feat=8, image_size=64)
    table = dict(parameter_table(GENES, **sizes))
    g = RGGenerator(GENES, embed_dim=16, latent_size=5, g_n_feat=4, image_size=64)
    d = RGDiscriminator(embed_dim=16, d_n_feat=8, image_size=64)
    assert table["generator"] == sum(p.numel() for p in g.parameters())
    assert table["discriminator"] == sum(p.numel() for p in d.parameters())
    with pytest.raises(ValueError, match="power of two"):
        parameter_table(image_size=96)


def _hand_written_dcgan_init(module: nn.Module) -> None:
    """The DCGAN init this package wrote by hand before it used MONAI's ``normal_init`` (the reference)."""
    from torch.nn.modules.batchnorm import _NormBase

    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (_NormBase, nn.GroupNorm, nn.LayerNorm)):
        if getattr(module, "weight", None) is not None:
            nn.init.normal_(module.weight, 1.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


_NETS = {
    "G": lambda: RGGenerator(GENES, embed_dim=16, latent_size=5, g_n_feat=4, image_size=32),
    "G texture film": lambda: RGGenerator(
        GENES, embed_dim=16, latent_size=5, g_n_feat=4, image_size=64, texture_noise=True, film=True
    ),
    "D": lambda: RGDiscriminator(embed_dim=16, d_n_feat=4, image_size=32),
    "D k4 condition projection": lambda: RGDiscriminator(
        embed_dim=16, d_n_feat=4, image_size=32, kernel_size=4, condition_dim=GENES, isc_head="projection"
    ),
}


@pytest.mark.parametrize("net", list(_NETS))
def test_init_weights_is_monai_normal_init_draw_for_draw(net):
    """Same seed, same weights, bit for bit: ``init_weights``, MONAI's ``normal_init(std=0.02)`` and the old rule.

    The modules are visited in the same order (``nn.Module.apply``) and each draws the same normal samples,
    so the draw order is identical and so is every tensor (parameters and buffers).
    """
    from functools import partial

    from monai.networks.utils import normal_init

    states = []
    for init in (init_weights, partial(normal_init, std=0.02), _hand_written_dcgan_init):
        torch.manual_seed(11)
        module = _NETS[net]()
        torch.manual_seed(12)
        states.append(module.apply(init).state_dict())
    for other in states[1:]:
        assert states[0].keys() == other.keys()
        for k, v in states[0].items():
            assert torch.equal(v, other[k]), k


def test_init_weights_covers_what_normal_init_skips():
    """Layer, group and instance norm (which MONAI's ``normal_init`` leaves alone) and a BatchNorm without
    affine parameters (on which it would fail) get the old rule."""
    mods = [nn.LayerNorm(64), nn.GroupNorm(2, 64), nn.InstanceNorm2d(64, affine=True), nn.BatchNorm2d(64, affine=False)]

    class Renamed(nn.Conv2d):  # a subclass whose name normal_init does not recognise
        pass

    mods.append(Renamed(2, 64, 3))
    for m in mods:
        ref = copy.deepcopy(m)
        torch.manual_seed(5)
        m.apply(init_weights)
        torch.manual_seed(5)
        ref.apply(_hand_written_dcgan_init)
        for (k, v), (_, w) in zip(m.state_dict().items(), ref.state_dict().items()):
            assert torch.equal(v, w), (type(m).__name__, k)
