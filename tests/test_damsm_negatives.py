"""The DAMSM loss scored by a trained copy of the image encoder, with the generator's images as negatives
(``train.damsm_fake_negatives``, ``--damsm-fake-negatives``)."""

import json
import math

import pytest
import torch
from conftest import make_damsm_encoder

from stackgan2.cli.main import app
from stackgan2.config import PRESETS, resolve_config
from stackgan2.errors import ConfigError
from stackgan2.losses import damsm_loss
from stackgan2.text.damsm import sentence_loss, word_loss
from stackgan2.training.checkpoint import load_checkpoint, save_checkpoint
from stackgan2.training.objectives import DAMSM, TrainedDAMSM
from stackgan2.training.trainer import Trainer

CAPTIONS = ["a red bird with black wings", "a blue bird", "a bird with red wings", "a black bird"]


def _cfg(on: bool = True, **train):
    return resolve_config("tiny", overrides={"train.device": "cpu", "train.damsm_coef": 5.0,
                                             "train.damsm_fake_negatives": on, **{f"train.{k}": v for k, v in train.items()}})


def _inputs(trainer, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = [torch.rand(4, 3, r, r, generator=g) * 2 - 1 for r in trainer.cfg.model.resolutions]
    wrong = [torch.rand(4, 3, r, r, generator=g) * 2 - 1 for r in trainer.cfg.model.resolutions]
    text = trainer.damsm.captions(CAPTIONS, torch.tensor([0, 1, 2, 3]))
    return real, wrong, text.sentence, text


def _matching_features(B=3, D=8, T=4, seed=0):
    """Features where image b matches caption b: its regions are the caption's words, its global feature the
    sentence (so every other image scores clearly lower)."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(B, D, T, generator=g)
    sentence = torch.randn(B, D, generator=g)
    return words[..., None].clone(), sentence.clone(), words, sentence, torch.full((B,), T)


def test_sentence_negatives_by_hand():
    """Two orthogonal pairs, gamma3 = 10: each caption's column gains its own fake (score 10) and the other
    fake (0): log(1 + e^-10) for the image -> caption rows as before, log(2 + 2 e^-10) for the columns."""
    eye, ids = torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])
    plain = sentence_loss(eye, eye, ids, 10.0)
    assert plain.item() == pytest.approx(2 * math.log1p(math.exp(-10)), rel=1e-4)
    assert sentence_loss(eye, eye, ids, 10.0, negatives=eye).item() == pytest.approx(
        math.log1p(math.exp(-10)) + math.log(2 + 2 * math.exp(-10)), rel=1e-5)
    # a negative far from every caption costs (almost) nothing; the same-class mask still holds for the reals
    assert sentence_loss(eye, eye, ids, 10.0, negatives=-eye).item() == pytest.approx(plain.item(), abs=1e-4)
    assert sentence_loss(eye, eye, torch.tensor([3, 3]), 10.0, negatives=-eye).item() == pytest.approx(0.0, abs=1e-4)


def test_fakes_equal_to_the_reals_cost_more_than_random_fakes():
    regions, image_global, words, sentence, lengths = _matching_features()
    ids = torch.arange(3)
    plain, plain_terms = damsm_loss(regions, image_global, words, sentence, lengths, ids)
    g = torch.Generator().manual_seed(1)
    random = (torch.randn(regions.shape, generator=g), torch.randn(image_global.shape, generator=g))
    with_random, random_terms = damsm_loss(regions, image_global, words, sentence, lengths, ids, negatives=random)
    with_copies, copy_terms = damsm_loss(regions, image_global, words, sentence, lengths, ids,
                                         negatives=(regions.clone(), image_global.clone()))
    # the negatives enter both the word and the sentence loss; a copy of the real image ties with it
    for name in ("word", "sentence"):
        assert plain_terms[name] <= random_terms[name] < copy_terms[name]
        assert copy_terms[name] - plain_terms[name] > 0.5 * math.log(2)
    assert plain < with_random < with_copies
    # damsm_loss hands the fakes' regions to the word loss (and their global features to the sentence loss)
    assert word_loss(regions, words, lengths, ids, negatives=regions.clone()).item() == pytest.approx(
        copy_terms["word"].item())


def test_without_negatives_the_loss_is_unchanged():
    regions, image_global, words, sentence, lengths = _matching_features(seed=3)
    ids = torch.tensor([0, 1, 0])
    a = damsm_loss(regions, image_global, words, sentence, lengths, ids, (4.0, 5.0, 10.0))
    b = damsm_loss(regions, image_global, words, sentence, lengths, ids, (4.0, 5.0, 10.0), negatives=None)
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_steps_train_the_copy_only_and_g_is_scored_by_it(tmp_path):
    trainer = Trainer(_cfg(), tmp_path)
    (term,) = (t for t in trainer.terms if isinstance(t, DAMSM))
    assert isinstance(term, TrainedDAMSM) and trainer.term_modules == {"A": term.copy}
    encoder = make_damsm_encoder(trainer.cfg.text)
    trainer.attach_text_encoder(encoder)
    frozen_image = [p.detach().clone() for p in trainer.damsm.encoder.image_encoder.parameters()]
    frozen_text = [p.detach().clone() for p in trainer.damsm.encoder.text_encoder.parameters()]
    copy = term.copy.encoder
    assert copy is not trainer.damsm.encoder.image_encoder and not copy.training
    assert all(torch.equal(a, b) for a, b in zip(frozen_image, copy.parameters(), strict=True))  # starts pretrained
    readers = []
    original = trainer.damsm.images
    trainer.damsm.images = lambda images, image_encoder=None: readers.append(image_encoder) or original(images, image_encoder)
    inputs = _inputs(trainer)
    for _ in range(2):
        stats = trainer.train_step(*inputs)
    # per step: the copy's update (reals and fakes in one pass), then G's DAMSM loss, both through the copy
    assert readers == [copy] * 4
    assert stats["A/total"].item() == pytest.approx((stats["A/word"] + stats["A/sentence"]).item(), rel=1e-6)
    t = trainer.cfg.train
    rest = stats["G/adversarial"] + t.kl_coef * stats["KL"] + t.color_coef * stats["color"]
    damsm = stats["DAMSM/word"] + stats["DAMSM/sentence"]
    assert stats["G/total"].item() == pytest.approx((rest + 5.0 * damsm).item(), rel=1e-5)
    # the copy moved; the frozen image encoder and the text encoder did not
    assert any(not torch.equal(a, b) for a, b in zip(frozen_image, copy.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen_image, trainer.damsm.encoder.image_encoder.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen_text, trainer.damsm.encoder.text_encoder.parameters(), strict=True))
    assert all(p.requires_grad for p in copy.parameters()) and not copy.training  # trainable again after G's step
    assert not any(p.requires_grad for p in trainer.damsm.encoder.image_encoder.parameters())


def test_copy_and_optimiser_are_checkpointed_and_resume_exactly(tmp_path):
    on = _cfg()
    trainer = Trainer(on, tmp_path / "a")
    encoder = make_damsm_encoder(on.text)
    trainer.attach_text_encoder(encoder)
    inputs = _inputs(trainer)
    trainer.train_step(*inputs)
    tensors, meta = trainer.state_tensors()
    assert any(k.startswith("A.encoder.") for k in tensors) and any(k.startswith("opt_A.") for k in tensors)
    path = save_checkpoint(tmp_path / "ckpt", trainer.step, tensors, {**meta, "config": on.model_dump(mode="json")}, 2)
    resumed = Trainer(on, tmp_path / "b")
    resumed.attach_text_encoder(encoder)
    resumed.load_state(load_checkpoint(path))
    for _ in range(2):
        a, b = trainer.train_step(*inputs), resumed.train_step(*inputs)
        assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}
    # off (the DAMSM term alone): no module, no keys, no optimiser; such checkpoints load as before
    off = Trainer(_cfg(False), tmp_path / "off")
    off.attach_text_encoder(encoder)
    assert not off.term_modules and type(next(t for t in off.terms if isinstance(t, DAMSM))) is DAMSM
    off_tensors, off_meta = off.state_tensors()
    assert not any(k.startswith(("A.", "opt_A.")) for k in off_tensors) and "opt_A" not in off_meta["param_groups"]
    path = save_checkpoint(tmp_path / "off-ckpt", 1, off_tensors, {**off_meta, "config": off.cfg.model_dump(mode="json")}, 2)
    Trainer(_cfg(False), tmp_path / "off2").load_state(load_checkpoint(path))


def test_needs_the_damsm_loss_and_is_off_in_every_preset(runner, tmp_path):
    with pytest.raises(ConfigError, match="damsm_fake_negatives.*damsm_coef"):
        resolve_config("tiny", overrides={"train.damsm_fake_negatives": True})
    for preset in PRESETS:
        assert resolve_config(preset).train.damsm_fake_negatives is False, preset
    common = ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run", "--damsm-fake-negatives"]
    refused = runner.invoke(app, common)
    assert refused.exit_code != 0 and "--damsm-coef" in refused.output and "Traceback" not in refused.output
    accepted = runner.invoke(app, [*common, "--damsm-coef", "5"])
    assert accepted.exit_code == 0, accepted.output
    assert json.loads(accepted.output[: accepted.output.rindex("}") + 1])["train"]["damsm_fake_negatives"] is True


def test_copy_learning_rate(runner, tmp_path):
    """--damsm-copy-lr: the copy's Adam (and the lr schedule, which sets every optimiser's rate each epoch)
    uses it; D and G keep theirs. Without --damsm-fake-negatives it is one error line."""
    from stackgan2.training.schedules import learning_rate

    cfg = _cfg(damsm_copy_lr=8e-4, lr_decay_every=2)
    trainer = Trainer(cfg, tmp_path)
    trainer.attach_text_encoder(make_damsm_encoder(cfg.text))
    optimizers = trainer._optimizers()
    assert optimizers["opt_A"].param_groups[0]["lr"] == 8e-4 != optimizers["opt_D0"].param_groups[0]["lr"]
    assert learning_rate(cfg.train, "opt_A", 2) == 4e-4 and learning_rate(cfg.train, "opt_D0", 2) == cfg.train.lr_d / 2
    assert learning_rate(_cfg().train, "opt_A", 0) == _cfg().train.lr_d  # default: D's rate
    with pytest.raises(ConfigError, match="damsm_copy_lr.*damsm_fake_negatives"):
        _cfg(False, damsm_copy_lr=8e-4)
    refused = runner.invoke(app, ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run",
                                  "--damsm-coef", "5", "--damsm-copy-lr", "1e-3"])
    assert refused.exit_code == 2 and "--damsm-fake-negatives" in refused.output and "Traceback" not in refused.output


@pytest.mark.parametrize("first, then", [(["--damsm-fake-negatives"], ["--no-damsm-fake-negatives"]), ([], ["--damsm-fake-negatives"])])
def test_toggling_at_resume_is_refused_and_init_from_starts_the_copy(first, then, runner, tmp_path, text_encoder_dir):
    run = tmp_path / "run"
    common = ["--quiet", "train", "--preset", "tiny", "--device", "cpu", "--text-encoder", str(text_encoder_dir),
              "--damsm-coef", "5", "--checkpoint-every", "2"]
    first_run = runner.invoke(app, [*common, "--run-dir", str(run), *first, "--max-steps", "2"])
    assert first_run.exit_code == 0, first_run.output
    result = runner.invoke(app, [*common, "--run-dir", str(run), *then, "--max-steps", "4", "--resume"])
    assert result.exit_code == 2, result.output
    assert "was trained with" in result.output and "--damsm-fake-negatives" in result.output
    assert "--init-from" in result.output and "Traceback" not in result.output
    assert [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()][-1] == 2
    if first:
        assert any(k.startswith("A/") for k in json.loads((run / "stats.jsonl").read_text().splitlines()[-1]))
        return
    # a new run from the run without it: the copy starts from the pretrained encoder
    grown = tmp_path / "from"
    started = runner.invoke(app, [*common, "--run-dir", str(grown), "--init-from", str(run), *then, "--max-steps", "2"])
    assert started.exit_code == 0, started.output
    record = json.loads((grown / "stats.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and record["A/total"] > 0


def test_init_terms_starts_the_terms_modules_from_the_source(tmp_path, caplog):
    """``train.init_terms``: the learning copy "A" and the feature D "F" of a checkpoint start the new run (their
    optimisers start fresh); without it, or from a source that lacks a module, it starts as before."""
    import logging

    from stackgan2.training.weights import load_initial_weights, start_terms_from

    cfg = _cfg(feature_d_coef=1.0)
    source = Trainer(cfg, tmp_path / "a")
    encoder = make_damsm_encoder(cfg.text)
    source.attach_text_encoder(encoder)
    inputs = _inputs(source)
    for _ in range(2):
        source.train_step(*inputs)
    tensors, meta = source.state_tensors()
    path = save_checkpoint(tmp_path / "ckpt", source.step, tensors, {**meta, "config": cfg.model_dump(mode="json")}, 2)
    weights = load_initial_weights(path)
    assert {"G", "G_ema", "D", "A", "F"} <= weights.states.keys()
    assert not any(name.startswith(("opt_", "rng")) for name in weights.states)

    def new_trainer(name, c=cfg):
        trainer = Trainer(c, tmp_path / name)
        trainer.attach_text_encoder(encoder)
        trainer.start_from(weights)
        return trainer

    trained = {name: module.state_dict() for name, module in source.term_modules.items()}
    fresh = new_trainer("fresh")  # start_from alone: G and D only, the terms' modules as a new run has them
    pretrained = encoder.image_encoder.state_dict()
    a_fresh = fresh.term_modules["A"].state_dict()
    assert any(not torch.equal(a_fresh[k], trained["A"][k]) for k in a_fresh)
    assert all(torch.equal(a_fresh[k], pretrained[k.removeprefix("encoder.")]) for k in a_fresh if k.startswith("encoder."))
    started = new_trainer("started")
    start_terms_from(weights, started.term_modules)
    for name, module in started.term_modules.items():
        assert all(torch.equal(v, trained[name][k]) for k, v in module.state_dict().items()), name
    assert not any(opt.state for opt in started._term_optimizers().values())
    # a source without the copy (the term off there): "A" starts from the pretrained encoder, with a log line
    off = Trainer(_cfg(False, feature_d_coef=1.0), tmp_path / "off")
    off.attach_text_encoder(encoder)
    off_tensors, off_meta = off.state_tensors()
    off_path = save_checkpoint(tmp_path / "off-ckpt", 1, off_tensors, {**off_meta, "config": off.cfg.model_dump(mode="json")}, 2)
    partial = new_trainer("partial")
    with caplog.at_level(logging.INFO, logger="stackgan2"):
        start_terms_from(load_initial_weights(off_path), partial.term_modules)
    assert "has no A module" in caplog.text
    assert all(torch.equal(v, a_fresh[k]) for k, v in partial.term_modules["A"].state_dict().items())


def test_init_terms_from_the_cli(runner, tmp_path, text_encoder_dir):
    """``--init-terms`` reaches the run: with the discriminators' rate at 1e-30 (it must be > 0) the copy a new
    run ends with is the source's; without the flag it is the pretrained encoder."""
    from safetensors.torch import load_file

    common = ["--quiet", "train", "--preset", "tiny", "--device", "cpu", "--text-encoder", str(text_encoder_dir),
              "--damsm-coef", "5", "--damsm-fake-negatives", "--checkpoint-every", "2", "--max-steps", "2"]
    source = tmp_path / "source"
    assert (result := runner.invoke(app, [*common, "--run-dir", str(source)])).exit_code == 0, result.output

    def copy_of(run):
        state = load_file(sorted((run / "checkpoints").glob("*.safetensors"))[-1])
        return {k: v for k, v in state.items() if k.startswith("A.")}

    alone = runner.invoke(app, [*common, "--run-dir", str(tmp_path / "alone"), "--init-terms"])
    assert alone.exit_code == 2 and "--init-from" in alone.output and "Traceback" not in alone.output
    assert not (tmp_path / "alone").exists()
    copies = {}
    for name, flags in (("with", ["--init-terms"]), ("without", [])):
        run = tmp_path / name
        result = runner.invoke(app, [*common, "--run-dir", str(run), "--init-from", str(source), "--lr-d", "1e-30", *flags])
        assert result.exit_code == 0, result.output
        assert json.loads((run / "config.json").read_text())["train"]["init_terms"] is bool(flags)
        copies[name] = copy_of(run)
    trained = copy_of(source)
    assert all(torch.allclose(v, trained[k], rtol=0, atol=1e-20) for k, v in copies["with"].items())
    assert not all(torch.allclose(v, trained[k], rtol=0, atol=1e-6) for k, v in copies["without"].items())
