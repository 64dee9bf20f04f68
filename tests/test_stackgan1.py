"""StackGAN v1 networks and losses: official parameter counts and the official quirks, each pinned."""

from __future__ import annotations

import pytest
import torch

from stackgan2.cli.main import app
from stackgan2.config import resolve_config
from stackgan2.errors import ConfigError
from stackgan2.losses import stackgan1_discriminator_loss
from stackgan2.models import build_discriminators, build_generator, count_parameters, init_weights
from stackgan2.models.stackgan1 import StageTwoGenerator
from stackgan2.training.objectives import shifted_pairs_discriminator_loss as discriminator_loss
from stackgan2.training.objectives import stackgan1_generator_loss as generator_loss


def v1(preset: str, stage: int, **overrides):
    return resolve_config(preset, overrides={"model.v1_stage": stage, **overrides})


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("preset", "g1", "d1", "g2_trainable", "g2_total", "d2"),
    [
        # hanzhanggit/StackGAN-Pytorch code/model.py with cfg/coco_s1.yml / coco_s2.yml
        ("v1-coco", 20_020_832, 12_407_425, 37_130_480, 57_151_312, 159_889_538),
        # the same model.py with the birds widths of its default config (GF 128, DF 64, R_NUM 4)
        ("v1-birds", 10_301_248, 5_715_713, 26_290_080, 36_591_328, 71_269_122),
    ],
)
def test_official_parameter_counts(preset, g1, d1, g2_trainable, g2_total, d2):
    with torch.device("meta"):
        G1, (D1,) = build_generator(v1(preset, 1).model), build_discriminators(v1(preset, 1).model)
        G2, (D2,) = build_generator(v1(preset, 2).model), build_discriminators(v1(preset, 2).model)
    assert (count_parameters(G1), count_parameters(D1)) == (g1, d1)
    assert (trainable(G2), count_parameters(G2), count_parameters(D2)) == (g2_trainable, g2_total, d2)
    assert count_parameters(G2.stage1) == g1 and trainable(G2.stage1) == 0


def test_coco_breakdown_matches_official_modules():
    with torch.device("meta"):
        G2 = build_generator(v1("v1-coco", 2).model)
        (D2,) = build_discriminators(v1("v1-coco", 2).model)
    G1 = G2.stage1
    assert count_parameters(G1.ca) == count_parameters(G2.ca) == 262_400
    assert count_parameters(G1.init_stage.fc) == 5_652_480
    assert [count_parameters(b) for b in G1.init_stage.upsample] == [10_618_368, 2_654_976, 663_936, 166_080]
    assert count_parameters(G1.to_image) == 2_592
    assert count_parameters(G2.image_encoder) == 5_905_728
    assert count_parameters(G2.refine.joint) == 6_194_688
    assert count_parameters(G2.refine.residual) == 21_239_808
    assert [count_parameters(b) for b in G2.refine.upsample] == [2_654_976, 663_936, 166_080, 41_568]
    assert count_parameters(G2.to_image) == 1_296
    assert count_parameters(D2.encoder) == 153_670_272 and count_parameters(D2.uncond_logits) == 12_289


def test_info_shows_both_stages(runner):
    result = runner.invoke(app, ["info", "--preset", "v1-coco"])
    assert result.exit_code == 0, result.output
    for line in ("Stage-I generator: 20,020,832", "Stage-I discriminator: 12,407,425",
                 "Stage-II generator (trainable): 37,130,480", "Stage-II discriminator: 159,889,538"):
        assert line in result.output


def test_stage2_preset_tables_and_validation():
    s1, s2 = v1("v1-coco", 1), v1("v1-coco", 2)
    assert (s1.train.batch_size, s1.train.epochs, s2.train.batch_size, s2.train.epochs) == (128, 120, 40, 100)
    assert s1.train.lr_decay_every == s2.train.lr_decay_every == 20 and s1.train.kl_coef == 2.0
    assert s2.model.resolutions == [64, 256] and s2.model.trained_branches == [1] and s2.model.eps_dim == 256
    # a flag still wins over the stage-2 table
    assert resolve_config("v1-coco", overrides={"model.v1_stage": 2, "train.batch_size": 8}).train.batch_size == 8
    with pytest.raises(ConfigError, match="stage_num"):
        resolve_config("v1-toy", overrides={"model.stage_num": 3})
    with pytest.raises(ConfigError, match="v1_stage"):
        resolve_config("tiny", overrides={"model.v1_stage": 2})


@pytest.fixture
def toy2():
    torch.manual_seed(0)
    cfg = v1("v1-toy", 2).model
    G, (D,) = build_generator(cfg), build_discriminators(cfg)
    init_weights(G, "normal")
    init_weights(D, "normal")
    return cfg, G, D


def test_shapes_and_frozen_stage1(toy2):
    cfg, G, D = toy2
    z, text = torch.randn(4, cfg.z_dim), torch.randn(4, cfg.text_dim)
    (low, high), mu, logvar = G(z, text)
    assert low.shape == (4, 3, 16, 16) and high.shape == (4, 3, 64, 64)
    assert mu.shape == logvar.shape == (4, cfg.c_dim)
    assert not low.requires_grad  # the Stage-I image is detached
    loss, _ = generator_loss(D, high, mu)
    loss.backward()
    assert all(p.grad is None for p in G.stage1.parameters())
    assert all(p.grad is not None for p in G.refine.parameters())
    condition = mu.detach().requires_grad_(True)
    generator_loss(D, high.detach().requires_grad_(True), condition)[0].backward()
    assert condition.grad is None  # D's condition is detached in the G step too (unlike StackGAN++)


def test_ca_relu_makes_mu_and_logvar_non_negative(toy2):
    cfg, G, _ = toy2
    _, mu, logvar = G.ca(torch.randn(64, cfg.text_dim))
    assert mu.min() >= 0 and logvar.min() >= 0 and (mu == 0).any()


def test_stage2_eps_halves_feed_stage1_and_stage2(toy2):
    cfg, G, _ = toy2
    G.eval()
    z, text, eps = torch.randn(2, cfg.z_dim), torch.randn(2, cfg.text_dim), torch.randn(2, cfg.eps_dim)
    (low, high), _, _ = G(z, text, eps)
    (low_1,), _, _ = G.stage1(z, text, eps[:, : cfg.c_dim])
    assert torch.equal(low, low_1)
    other = eps.clone()
    other[:, cfg.c_dim :] += 1
    (low_2, high_2), _, _ = G(z, text, other)
    assert torch.equal(low, low_2) and not torch.allclose(high, high_2)


def test_stage1_input_is_noise_then_condition():
    cfg = v1("v1-toy", 1).model
    G = build_generator(cfg).eval()
    with torch.no_grad():
        G.init_stage.fc[0].weight[:, cfg.z_dim :] = 0  # the columns after z: the condition's
    z, eps = torch.randn(2, cfg.z_dim), torch.randn(2, cfg.eps_dim)
    a = G(z, torch.randn(2, cfg.text_dim), eps)[0][0]
    b = G(z, torch.randn(2, cfg.text_dim), eps)[0][0]
    assert torch.equal(a, b)


def test_discriminator_concatenates_code_then_condition(toy2):
    _, _, D = toy2
    D.eval()
    with torch.no_grad():
        D.joint[0].weight[:, -D.c_dim :] = 0  # the last input channels: the condition's
    code = torch.randn(3, D.joint[0].in_channels - D.c_dim, 4, 4)
    assert torch.equal(D.cond_head(code, torch.randn(3, D.c_dim)), D.cond_head(code, torch.randn(3, D.c_dim)))


def test_refine_split_condition_equals_concatenation(toy2):
    cfg, G, _ = toy2
    G.eval()
    z, text, eps = torch.randn(2, cfg.z_dim), torch.randn(2, cfg.text_dim), torch.randn(2, cfg.eps_dim)
    split = G.split_condition(True)(z, text, eps)[0][1]
    literal = G.split_condition(False)(z, text, eps)[0][1]
    assert torch.allclose(split, literal, atol=1e-5)


def test_stage2_discriminator_loss_is_the_official_half_third_mix():
    logits = {k: torch.tensor(v) for k, v in {"real_c": [2.0, -1.0, 0.5], "wrong_c": [0.3, -2.0], "fake_c": [-1.5, 1.0, 0.0],
                                                "real_u": [1.0, 0.2, -0.7], "fake_u": [-0.4, 2.5, 0.1]}.items()}
    sig = {k: torch.sigmoid(v) for k, v in logits.items()}
    real, uncond_real = -torch.log(sig["real_c"]).mean(), -torch.log(sig["real_u"]).mean()
    wrong, fake = -torch.log(1 - sig["wrong_c"]).mean(), -torch.log(1 - sig["fake_c"]).mean()
    uncond_fake = -torch.log(1 - sig["fake_u"]).mean()
    total, terms = stackgan1_discriminator_loss(**logits)
    assert torch.allclose(total, (real + uncond_real) / 2 + (fake + wrong + uncond_fake) / 3)
    stage1, _ = stackgan1_discriminator_loss(logits["real_c"], logits["wrong_c"], logits["fake_c"])
    assert torch.allclose(stage1, real + 0.5 * (fake + wrong))
    assert torch.allclose(terms["wrong"], wrong)


def test_wrong_pairs_are_the_real_batch_shifted_by_one(toy2):
    cfg, G, D = toy2
    real, fake, mu = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64), torch.rand(4, cfg.c_dim)
    seen = []
    D.cond_head = lambda code, condition, groups=1: seen.append((code.clone(), condition.clone())) or code.sum((1, 2, 3))
    discriminator_loss(D, real, fake, mu)
    (real_code, real_cond), (wrong_code, wrong_cond), (_, fake_cond) = seen
    assert torch.equal(wrong_code, real_code[:-1]) and torch.equal(wrong_cond, mu[1:])
    assert torch.equal(real_cond, mu) and torch.equal(fake_cond, mu)


def test_init_weights_normal_scheme():
    torch.manual_seed(0)
    G = StageTwoGenerator(v1("v1-coco", 2, **{"model.ngf": 16, "model.ndf": 8}).model)
    init_weights(G, "normal")
    w = G.refine.residual[0].block[0].weight.detach()
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002
    assert torch.all(G.ca.fc.bias == 0)
    bn = G.refine.joint[1].requires_grad_(False)
    assert torch.all(bn.bias == 0) and abs(float(bn.weight.mean()) - 1) < 0.01


def test_stackgan2_blocks_are_unchanged_by_the_activation_option():
    # the GLU path keeps its official state-dict keys (the shipped model loads) and its forward
    cfg = resolve_config("tiny").model
    G = build_generator(cfg)
    keys = set(G.state_dict())
    assert "refine_stages.0.upsample.1.weight" in keys and "refine_stages.0.residual.0.block.3.weight" in keys
    block = G.refine_stages[0].residual[0].eval()
    x = torch.randn(2, block.block[0].in_channels, 4, 4)
    assert torch.equal(block(x), x + block.block(x))  # StackGAN++: no activation after the add
    assert (block(x) < 0).any()
