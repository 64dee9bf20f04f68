import pytest
import torch
import torch.nn.functional as F

from stackgan2.config import PRESETS, resolve_config
from stackgan2.models import build_discriminators, build_generator, count_parameters, init_weights
from stackgan2.models.blocks import StageDiscriminator, broadcast_conv3x3
from stackgan2.models.stackgan2 import Generator


def test_birds_parameter_counts_match_official():
    # hanzhanggit/StackGAN-v2 model.py at cfg/birds_3stages.yml
    cfg = resolve_config("birds").model
    with torch.device("meta"):
        G = Generator(cfg)
        discriminators = build_discriminators(cfg)
    assert count_parameters(G) == 21_239_696
    assert count_parameters(G.ca) == 524_800
    assert count_parameters(G.init_stage) == 20_074_240
    assert [count_parameters(s) for s in G.refine_stages] == [480_384, 157_248]
    assert [count_parameters(t) for t in G.to_images] == [1_728, 864, 432]
    assert [count_parameters(d) for d in discriminators] == [5_723_906, 18_834_178, 71_269_122]


def test_flowers_preset_is_the_same_architecture():
    assert resolve_config("flowers").model == resolve_config("birds").model


@pytest.mark.parametrize("stage_num", [1, 2, 3, 4])
def test_shapes_and_gradients_every_stage_num(stage_num):
    torch.manual_seed(0)
    cfg = resolve_config("tiny", overrides={"model.stage_num": stage_num}).model
    G, discriminators = Generator(cfg), build_discriminators(cfg)
    init_weights(G)
    init_weights(discriminators)
    z, text = torch.randn(3, cfg.z_dim), torch.randn(3, cfg.text_dim)
    images, mu, logvar = G(z, text)
    assert [tuple(im.shape) for im in images] == [(3, 3, r, r) for r in cfg.resolutions]
    assert all(im.min() >= -1 and im.max() <= 1 for im in images)
    assert mu.shape == logvar.shape == (3, cfg.c_dim)
    loss = mu.sum() + logvar.sum()
    for D, image in zip(discriminators, images, strict=True):
        cond, uncond = D(image, mu)
        assert cond.shape == uncond.shape == (3,)
        loss = loss + cond.sum() + uncond.sum()
    loss.backward()
    for name, p in [*G.named_parameters(), *discriminators.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_depth_follows_resolution():
    ndf = 4
    small, large = StageDiscriminator(64, ndf, 8), StageDiscriminator(256, ndf, 8)
    convs = lambda d: [m for m in d.encoder.modules() if isinstance(m, torch.nn.Conv2d)]  # noqa: E731
    assert len(convs(small)) == 4 and len(convs(large)) == 8
    assert convs(large)[-1].out_channels == 8 * ndf
    with pytest.raises(ValueError, match="power of two"):
        StageDiscriminator(48, ndf, 8)


def test_generator_rejects_wrong_shapes():
    cfg = resolve_config("tiny").model
    G = Generator(cfg)
    with pytest.raises(AssertionError, match="sentence_embedding"):
        G(torch.randn(2, cfg.z_dim), torch.randn(2, cfg.text_dim + 1))


def test_init_weights_official_scheme():
    torch.manual_seed(0)
    G = Generator(resolve_config("tiny").model)
    init_weights(G)
    w = G.ca.fc.weight  # orthogonal: the smaller Gram matrix is the identity
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-4)
    assert torch.all(G.ca.fc.bias == 0)
    bn = G.init_stage.fc[1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and 0.01 < bn.weight.std().item() < 0.03
    assert torch.all(bn.bias == 0)


@pytest.mark.parametrize("height,width", [(2, 2), (3, 5), (8, 8), (32, 16)])
def test_broadcast_conv3x3_equals_conv_of_the_broadcast_map(height, width):
    torch.manual_seed(0)
    code = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    fast = broadcast_conv3x3(code, weight, height, width)
    full = F.conv2d(code[:, :, None, None].expand(-1, -1, height, width), weight, padding=1)
    assert fast.shape == full.shape == (3, 4, height, width)
    assert torch.allclose(fast, full, rtol=0, atol=1e-12)
    upstream = torch.randn_like(full)
    for a, b in zip(torch.autograd.grad(fast, (code, weight), upstream),
                    torch.autograd.grad(full, (code, weight), upstream), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_split_condition_generator_equals_concatenation():
    """Same parameters, same images and gradients whichever way the refine stages apply their joint conv."""
    cfg = resolve_config("tiny").model
    torch.manual_seed(0)
    generator = Generator(cfg).double()
    init_weights(generator)
    z, text = torch.randn(4, cfg.z_dim, dtype=torch.float64), torch.randn(4, cfg.text_dim, dtype=torch.float64)
    eps = torch.randn(4, cfg.c_dim, dtype=torch.float64)
    outputs = []
    for split in (False, True):
        generator.split_condition(split).zero_grad()
        images, _, _ = generator(z, text, eps)
        sum(im.square().mean() for im in images).backward()
        outputs.append(([im.detach() for im in images], [p.grad.clone() for p in generator.parameters()]))
    (images_a, grads_a), (images_b, grads_b) = outputs
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(images_a, images_b, strict=True))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads_a, grads_b, strict=True))
    assert any(stage.split_condition for stage in generator.refine_stages)


def test_stacked_discriminator_pass_equals_three_separate_passes():
    """groups=3: logits, parameter gradients and BatchNorm running statistics as with three passes in order."""
    torch.manual_seed(0)
    results = []
    batches = [torch.randn(4, 3, 32, 32, dtype=torch.float64) + shift for shift in (0.0, 0.5, -1.0)]
    condition = torch.randn(4, 6, dtype=torch.float64)
    for stacked in (False, True):
        torch.manual_seed(1)
        D = StageDiscriminator(32, 4, 6).double()
        init_weights(D)
        if stacked:
            cond, uncond = D(torch.cat(batches), condition.repeat(3, 1), groups=3)
            outputs = list(zip(cond.chunk(3), uncond.chunk(3), strict=True))
        else:
            outputs = [D(images, condition) for images in batches]
        sum((c.sigmoid() * (k + 1)).sum() + u.square().sum() for k, (c, u) in enumerate(outputs)).backward()
        results.append((outputs, [p.grad for p in D.parameters()], [b.clone() for b in D.buffers()]))
    (out_a, grads_a, buffers_a), (out_b, grads_b, buffers_b) = results
    for (ca, ua), (cb, ub) in zip(out_a, out_b, strict=True):
        assert torch.allclose(ca, cb, atol=1e-10) and torch.allclose(ua, ub, atol=1e-10)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads_a, grads_b, strict=True))
    assert all(torch.equal(a, b) if a.dtype == torch.long else torch.allclose(a, b, atol=1e-12)
               for a, b in zip(buffers_a, buffers_b, strict=True))
    assert any(b.dtype == torch.long and int(b) == 3 for b in buffers_b)  # num_batches_tracked: three passes


LEVERS = {"d_projection": True, "d_norm": "spectral", "g_text_fusion": True}


def test_levers_are_off_in_the_official_and_test_presets():
    for preset in ("tiny", "birds", "flowers"):
        cfg = resolve_config(preset)
        assert not cfg.model.d_projection and cfg.model.d_norm == "batch" and not cfg.model.g_text_fusion
        assert cfg.train.gan_loss == "bce" and cfg.train.ma_gp_coef == 0
        assert cfg.model.ca_noise == 1 and cfg.train.damsm_coef == 0 and cfg.train.feature_d_coef == 0
    assert all(resolve_config(preset).train.d_recon_coef == 0 for preset in PRESETS)  # the toy recipe too


def test_toy_preset_is_the_colour_recipe_of_the_quality_study():
    """docs/quality.md, the shipped model's recipe: fusion, projection, no CA noise, DAMSM loss on every
    branch, the feature D; the official losses otherwise (BCE, batch-norm Ds, no gradient penalty)."""
    cfg = resolve_config("toy")
    assert cfg.model.g_text_fusion and cfg.model.d_projection and cfg.model.ca_noise == 0
    assert (cfg.train.damsm_coef, cfg.train.damsm_branches, cfg.train.feature_d_coef) == (5.0, "all", 1.0)
    assert cfg.text.epochs == 24 and cfg.train.ms_coef == 0  # mode seeking is added when the tree grows
    assert cfg.model.d_norm == "batch" and cfg.train.gan_loss == "bce" and cfg.train.ma_gp_coef == 0


def test_text_fusion_starts_as_the_identity():
    cfg = resolve_config("tiny", overrides={"model.stage_num": 2}).model
    torch.manual_seed(0)
    fused = Generator(cfg.model_copy(update={"g_text_fusion": True}))
    init_weights(fused)
    plain = Generator(cfg)
    missing, unexpected = plain.load_state_dict(fused.state_dict(), strict=False)
    assert not missing and unexpected and all(".fusion." in k for k in unexpected)
    fused.eval(), plain.eval()
    z, text, eps = torch.randn(3, cfg.z_dim), torch.randn(3, cfg.text_dim), torch.randn(3, cfg.c_dim)
    for a, b in zip(fused(z, text, eps)[0], plain(z, text, eps)[0], strict=True):
        assert torch.equal(a, b)
    # ... and the text moves the scale once the heads learn: gamma depends on c.
    affine = fused.init_stage.fusion[0]
    torch.nn.init.normal_(affine.gamma[-1].weight)
    assert not torch.allclose(affine.gamma(eps)[0], affine.gamma(eps)[1])


def test_projection_adds_the_inner_product_of_text_and_pooled_code():
    torch.manual_seed(0)
    D = StageDiscriminator(16, 4, 8, projection=True).eval()
    plain = StageDiscriminator(16, 4, 8).eval()
    plain.load_state_dict({k: v for k, v in D.state_dict().items() if not k.startswith("projection")})
    images, mu = torch.randn(3, 3, 16, 16), torch.randn(3, 8)
    code = D.encoder(images).mean(dim=(2, 3))
    expected = plain(images, mu)[0] + (D.projection.weight @ mu.T).T.mul(code).sum(1)
    assert torch.allclose(D(images, mu)[0], expected, atol=1e-6)
    assert torch.equal(D(images, mu)[1], plain(images, mu)[1])


def test_spectral_norm_discriminator_has_no_batch_norm_and_unit_spectral_norm():
    torch.manual_seed(0)
    D = StageDiscriminator(32, 4, 8, norm="spectral")
    init_weights(D)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    for _ in range(30):  # power iteration: one step per training forward
        D(torch.randn(2, 3, 32, 32), torch.randn(2, 8))
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6  # 3 down-blocks, joint, conditional and unconditional logits
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=0.05)
    # per-sample: without batch norm a sample's logits do not depend on the rest of the batch
    images, mu = torch.randn(4, 3, 32, 32), torch.randn(4, 8)
    D.eval()
    assert torch.allclose(D(images, mu)[0][:2], D(images[:2], mu[:2])[0], atol=1e-6)


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_each_lever_trains_every_parameter(lever):
    torch.manual_seed(0)
    cfg = resolve_config("tiny", overrides={"model.stage_num": 2, f"model.{lever}": LEVERS[lever]}).model
    G, discriminators = Generator(cfg), build_discriminators(cfg)
    init_weights(G)
    init_weights(discriminators)
    images, mu, _ = G(torch.randn(3, cfg.z_dim), torch.randn(3, cfg.text_dim))
    loss = sum(sum(out.sum() for out in D(image, mu)) for D, image in zip(discriminators, images, strict=True))
    loss.backward()
    for name, p in [*G.named_parameters(), *discriminators.named_parameters()]:
        if ".fusion." in name and (".gamma.0." in name or ".beta.0." in name):
            # the identity start (second Linear zero) stops the first Linear's gradient until the second moves
            assert p.grad is None or p.grad.abs().sum() == 0, name
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_ca_noise_scales_the_conditioning_noise():
    from stackgan2.errors import ConfigError

    base = resolve_config("tiny")
    assert base.model.ca_noise == 1.0 and resolve_config("birds").model.ca_noise == 1.0  # official
    embedding, eps = torch.randn(3, base.model.text_dim), torch.randn(3, base.model.eps_dim)
    codes = {}
    for noise in (1.0, 0.5, 0.0):
        torch.manual_seed(0)
        G = build_generator(base.model.model_copy(update={"ca_noise": noise}))
        codes[noise] = G.ca(embedding, eps)
    (c1, mu, logvar), (c_half, *_), (c0, *_) = codes[1.0], codes[0.5], codes[0.0]
    assert torch.allclose(c1, mu + torch.exp(0.5 * logvar) * eps)
    assert torch.allclose(c_half, mu + 0.5 * torch.exp(0.5 * logvar) * eps) and torch.equal(c0, mu)
    with pytest.raises(ConfigError, match="ca_noise"):
        resolve_config("attngan-toy", overrides={"model.ca_noise": 0.0})


@pytest.mark.parametrize("levers", [{}, {"g_word_attention": True}], ids=["toy", "toy-word-attention"])
def test_info_summary_runs_the_toy_recipe_and_its_levers(levers, runner):
    """`stackgan2 info` (the README's first command) walks every stage of the toy preset, whose recipe turns
    text fusion on (it crashed on it: the init stage got no c), and of word attention."""
    from stackgan2.cli.main import app
    from stackgan2.summary import model_summary

    cfg = resolve_config("toy").model.model_copy(update=levers)
    rows, totals = model_summary(cfg)
    assert totals["generator"] == count_parameters(build_generator(cfg))
    assert rows[-1][0].startswith("D.2") and "256 px" in rows[-1][0]
    if not levers:
        result = runner.invoke(app, ["info"])
        assert result.exit_code == 0, result.output
        assert "discriminators:" in result.output
