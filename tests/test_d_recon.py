"""FastGAN's self-supervised discriminator (``train.d_recon_coef``): decoders rebuild real images from each D's
features, trained with D by D's optimiser."""

import json

import pytest
import torch
import torch.nn.functional as F

from stackgan2.cli.main import app
from stackgan2.config import resolve_config
from stackgan2.models.blocks import FeatureDecoders, StageDiscriminator, quadrant
from stackgan2.training.checkpoint import load_checkpoint, save_checkpoint
from stackgan2.training.objectives import DiscriminatorReconstruction
from stackgan2.training.trainer import Trainer


def _cfg(coef: float):
    return resolve_config("tiny", overrides={"train.device": "cpu", "train.d_recon_coef": coef})


def _batch(cfg, size=4):
    g = torch.Generator().manual_seed(0)
    real = [torch.rand(size, 3, r, r, generator=g) * 2 - 1 for r in cfg.model.resolutions]
    wrong = [torch.rand(size, 3, r, r, generator=g) * 2 - 1 for r in cfg.model.resolutions]
    return real, wrong, torch.randn(size, cfg.model.text_dim, generator=g)


def test_quadrant_crops_each_image_at_its_own_part():
    x = torch.arange(4 * 2 * 4 * 4, dtype=torch.float).view(4, 2, 4, 4)
    corners = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 4)), (slice(2, 4), slice(0, 2)), (slice(2, 4), slice(2, 4))]
    which = torch.tensor([3, 0, 2, 1])
    crops = quadrant(x, which)
    assert crops.shape == (4, 2, 2, 2)
    for b, part in enumerate(which.tolist()):
        rows, cols = corners[part]
        assert torch.equal(crops[b], x[b, :, rows, cols])


def test_features_follow_the_encoder_and_stop_at_the_smallest_map():
    torch.manual_seed(0)
    D = StageDiscriminator(64, ndf=4, c_dim=4)
    assert D.feature_channels == {32: 4, 16: 8, 8: 16, 4: 32}
    assert StageDiscriminator(128, ndf=4, c_dim=4).feature_channels == {64: 4, 32: 8, 16: 16, 8: 32, 4: 64}
    images = torch.rand(2, 3, 64, 64)
    ran = []
    for block in D.encoder:
        block.register_forward_hook(lambda *_: ran.append(1))
    maps = D.features(images, smallest=8)
    assert {size: tuple(m.shape[1:]) for size, m in maps.items()} == {32: (4, 32, 32), 16: (8, 16, 16), 8: (16, 8, 8)}
    assert len(ran) == 3  # the 8 -> 4 block did not run
    assert torch.equal(D.features(images)[4], D.encode(images))  # the same path as the code the heads read


def test_decoders_rebuild_whole_images_and_rotating_quadrants_at_up_to_64_px():
    torch.manual_seed(0)
    sizes = {}
    for resolution in (8, 16, 32, 64):
        decoders = FeatureDecoders(StageDiscriminator(resolution, ndf=4, c_dim=4), width=8)
        sizes[resolution] = (decoders.whole_size, decoders.whole[-1].conv.in_channels, decoders.part is not None)
    # from the 4x4 code of an 8 px D, else the 8x8 map; a quadrant from D's 16x16 map from 32 px on
    assert sizes == {8: (4, 8, False), 16: (8, 8, False), 32: (8, 4, True), 64: (8, 2, True)}
    D = StageDiscriminator(128, ndf=4, c_dim=4)
    decoders = FeatureDecoders(D, width=8)
    images = torch.rand(4, 3, 128, 128) * 2 - 1
    for batches in range(2):
        (whole, whole_target), (part, part_target) = decoders(D.features(images, decoders.whole_size), images)
        assert whole.shape == part.shape == (4, 3, 64, 64) and whole.abs().max() <= 1
        assert torch.allclose(whole_target, F.avg_pool2d(images, 2))  # averaged down, not sampled
        which = (torch.arange(4) + batches) % 4  # every batch all four quadrants, moved on by one each batch
        assert torch.equal(part_target, quadrant(images, which))
    assert int(decoders.batches) == 2


def test_term_trains_d_and_its_decoders_logs_recon_and_resumes_exactly(tmp_path):
    on = _cfg(0.5)
    trainer = Trainer(on, tmp_path / "a")
    (term,) = (t for t in trainer.terms if isinstance(t, DiscriminatorReconstruction))
    assert set(term.decoders) == {"8", "16", "32"} and trainer.term_modules == {"R": term.decoders}
    real, wrong, emb = _batch(on)
    # the loss reaches D's blocks down to its 8x8 map and the decoders, nothing after that map
    D = trainer.discriminators[2]  # 32 px: 32 -> 16 -> 8 -> 4
    loss, terms = term.discriminator_loss(D, D, real[2], torch.zeros(4, on.model.condition_dim))
    assert loss.item() == pytest.approx(0.5 * terms["recon"].item())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in [*D.encoder[:2].parameters(), *term.decoders["32"].parameters()])
    assert all(p.grad is None for p in [*D.encoder[2].parameters(), *D.joint.parameters(), *term.decoders["16"].parameters()])
    trainer.discriminators.zero_grad(set_to_none=True)
    term.decoders.zero_grad(set_to_none=True)

    before = [p.detach().clone() for p in term.decoders.parameters()]
    stats = trainer.train_step(real, wrong, emb)
    for i in range(3):
        assert stats[f"D{i}/recon"] > 0
        adversarial = stats[f"D{i}/real"] + stats[f"D{i}/wrong"] + stats[f"D{i}/fake"]
        assert stats[f"D{i}/total"].item() == pytest.approx((adversarial + 0.5 * stats[f"D{i}/recon"]).item(), rel=1e-5)
    # D's optimiser steps its decoders: every decoder weight moved
    assert all(not torch.equal(a, b) for a, b in zip(before, term.decoders.parameters(), strict=True))

    tensors, meta = trainer.state_tensors()
    assert "R.32.part.0.1.weight" in tensors and int(tensors["R.32.batches"]) == 2
    for i, D in enumerate(trainer.discriminators):
        size = len(list(D.parameters())) + len(list(term.decoders[str(D.resolution)].parameters()))
        assert len(meta["param_groups"][f"opt_D{i}"][0]["params"]) == size
    path = save_checkpoint(tmp_path / "ckpt", trainer.step, tensors, {**meta, "config": on.model_dump(mode="json")}, 2)
    resumed = Trainer(on, tmp_path / "b")
    resumed.load_state(load_checkpoint(path))
    a, b = trainer.train_step(real, wrong, emb), resumed.train_step(real, wrong, emb)
    assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}


def test_off_adds_no_modules_keys_or_optimiser_entries(tmp_path):
    trainer = Trainer(_cfg(0.0), tmp_path)
    tensors, meta = trainer.state_tensors()
    assert not trainer.term_modules and not any(k.startswith("R.") for k in tensors)
    for i, D in enumerate(trainer.discriminators):
        assert len(meta["param_groups"][f"opt_D{i}"][0]["params"]) == len(list(D.parameters()))
    assert not any("recon" in k for k in trainer.train_step(*_batch(trainer.cfg)))


def test_the_flag_sets_it(tmp_path):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run",
                                      "--d-recon-coef", "0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[: result.output.rindex("}") + 1])["train"]["d_recon_coef"] == 0.5


@pytest.mark.parametrize("first, then", [(["--d-recon-coef", "1"], ["--d-recon-coef", "0"]), ([], ["--d-recon-coef", "1"])])
def test_switching_the_decoders_on_or_off_at_resume_is_one_usage_error(first, then, tmp_path, text_encoder_dir):
    from typer.testing import CliRunner

    run = tmp_path / "run"
    common = ["--quiet", "train", "--preset", "tiny", "--device", "cpu", "--text-encoder", str(text_encoder_dir),
              "--run-dir", str(run), "--checkpoint-every", "2"]
    assert CliRunner().invoke(app, [*common, *first, "--max-steps", "2"]).exit_code == 0
    result = CliRunner().invoke(app, [*common, *then, "--max-steps", "4", "--resume"])
    assert result.exit_code == 2, result.output
    assert "was trained with" in result.output and "--d-recon-coef" in result.output
    assert "--init-from" in result.output and "Traceback" not in result.output
    assert [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()][-1] == 2
