"""Unit tests of the official StackGAN-v2 step, checkpoints and the epoch sampler (no dataset needed)."""

import json
import logging
import re
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from conftest import make_damsm_encoder

from stackgan2.config import resolve_config
from stackgan2.errors import CheckpointError, ConfigError, TrainingError
from stackgan2.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from stackgan2.training.distributed import DistContext
from stackgan2.training.loop import EpochBatches
from stackgan2.training.objectives import DAMSM
from stackgan2.training.schedules import ema_decay
from stackgan2.training.trainer import Trainer


def _batch(cfg, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = [torch.rand(size, 3, r, r, generator=g) * 2 - 1 for r in cfg.model.resolutions]
    wrong = [torch.rand(size, 3, r, r, generator=g) * 2 - 1 for r in cfg.model.resolutions]
    return real, wrong, torch.randn(size, cfg.model.text_dim, generator=g)


@pytest.fixture
def cfg():
    return resolve_config("tiny", overrides={"train.device": "cpu", "train.color_coef": 1.0})


def _family(cfg, arch):
    """``cfg`` as the given model family (AttnGAN with its official loss weights)."""
    if arch == "stackgan2":
        return cfg
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"arch": arch}),
                                  "train": cfg.train.model_copy(update={"damsm_coef": 5.0, "kl_coef": 1.0})})


def _step_inputs(trainer, cfg):
    """A random batch, plus caption features from a small encoder when the family needs them."""
    real, wrong, emb = _batch(cfg)
    if not trainer.needs_caption_features:
        return real, wrong, emb
    trainer.attach_text_encoder(make_damsm_encoder(cfg.text))
    text = trainer.damsm.captions(CAPTIONS, torch.tensor([0, 1, 2, 3]))
    return real, wrong, text.sentence, text


ALL_LEVERS = {"model.d_projection": True, "model.d_norm": "spectral", "model.g_text_fusion": True,
              "train.gan_loss": "hinge", "train.ma_gp_coef": 2.0}


@pytest.mark.parametrize(("arch", "levers"), [("stackgan2", {}), ("stackgan2", ALL_LEVERS),
                                               ("stackgan2", {"model.g_word_attention": True, "train.ms_coef": 1.0}), ("attngan", {})],
                         ids=["official", "levers", "word-attention", "attngan"])
def test_each_network_gets_gradient_once_per_step(tmp_path, arch, levers):
    cfg = _family(resolve_config("tiny", overrides={"train.device": "cpu", "train.color_coef": 1.0, **levers}), arch)
    trainer = Trainer(cfg, tmp_path)
    counts: Counter = Counter()
    named = [("G", n, p) for n, p in trainer.G.named_parameters()] + [
        ("D", n, p) for n, p in trainer.discriminators.named_parameters()
    ]
    for owner, name, p in named:
        p.register_hook(lambda grad, key=(owner, name): counts.update([key]))
    stats = trainer.train_step(*_step_inputs(trainer, cfg))
    # G gets gradient only in the G step (fakes are detached for D); D only in its own step (no
    # gradient flows into D parameters during the G step).
    for owner, name, p in named:
        assert counts[(owner, name)] == 1, (owner, name)
        if ".fusion." in name and (".gamma.0." in name or ".beta.0." in name):
            continue  # identity start: no gradient into the first Linear of a text-fusion head yet
        if re.search(r"\.word_fusion\.(\d+\.)?attention\.", name):
            continue  # identity start: the word context reaches the image through zero-initialised convs
        assert p.grad is not None and p.grad.abs().sum() > 0, (owner, name)
    stage_keys = {f"D{i}/{t}" for i in range(3) for t in ("real", "wrong", "fake", "total")}
    if "train.ma_gp_coef" in levers:  # the gradient penalty is logged per stage, and is positive on random images
        assert all(stats[f"D{i}/ma_gp"] > 0 for i in range(3))
    else:
        assert not any("ma_gp" in k for k in stats)
    assert stage_keys | {"G0/cond", "G2/uncond", "G/adversarial", "KL", "color", "G/total"} <= set(stats)
    assert stats["color"] > 0 or arch == "attngan"


def test_attngan_discriminators_see_the_sentence_and_shifted_mismatched_pairs(cfg, tmp_path):
    cfg = _family(cfg, "attngan")
    trainer = Trainer(cfg, tmp_path)
    real, wrong, sentence, text = _step_inputs(trainer, cfg)
    calls = []
    for i, D in enumerate(trainer.discriminators):
        original = D.cond_head
        D.cond_head = lambda code, condition, groups=1, i=i, original=original: (
            calls.append((i, code.shape[0], condition.clone())) or original(code, condition, groups))
    z_seen = []
    original_g = trainer.G_forward
    trainer.G_forward = lambda *args, **kwargs: z_seen.append(kwargs) or original_g(*args, **kwargs)
    trainer.train_step(real, wrong, sentence, text)
    assert torch.equal(z_seen[0]["words"], text.words) and torch.equal(z_seen[0]["mask"], text.mask)
    for i in range(3):
        d_step = [c for c in calls if c[0] == i][:3]  # real, wrong, fake; then the G step's fake
        assert [n for _, n, _ in d_step] == [4, 3, 4]
        assert torch.equal(d_step[0][2], sentence) and torch.equal(d_step[2][2], sentence)  # not the CA mean
        assert torch.equal(d_step[1][2], sentence[1:])  # real image k with sentence k + 1
        g_step = [c for c in calls if c[0] == i][3]
        assert torch.equal(g_step[2], sentence)


def test_g_step_does_not_change_discriminators(cfg, tmp_path):
    trainer = Trainer(cfg, tmp_path)
    after_d = {}
    original_update = trainer._update

    def spy(loss, optimizer, scaler, params, what, terms):
        original_update(loss, optimizer, scaler, params, what, terms)
        if optimizer is trainer.opts_D[-1]:
            after_d.update({k: v.clone() for k, v in trainer.discriminators.named_parameters()})

    trainer._update = spy
    trainer.train_step(*_batch(cfg))
    final = dict(trainer.discriminators.named_parameters())
    assert after_d
    for key, value in after_d.items():
        assert torch.equal(final[key], value), key


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_tracks_generator(cfg, tmp_path, warmup):
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ema_warmup": warmup})})
    trainer = Trainer(cfg, tmp_path)
    trainer.step = 3
    before = [p.clone() for p in trainer.G_ema.parameters()]
    trainer.train_step(*_batch(cfg))
    decay = 4 / 13 if warmup else cfg.train.ema_decay  # (1 + t) / (10 + t) at t = 3 during warm-up
    for b, ema, p in zip(before, trainer.G_ema.parameters(), trainer.G.parameters(), strict=True):
        assert torch.allclose(ema, decay * b + (1 - decay) * p, atol=1e-6)


def test_ema_warmup_reaches_the_official_constant_decay():
    train = resolve_config("toy").train
    assert train.ema_warmup and ema_decay(train, 0) == pytest.approx(0.1)
    assert ema_decay(train, 8989) < 0.999 and ema_decay(train, 8990) == ema_decay(train, 100_000) == 0.999
    for preset in ("birds", "flowers"):  # the official configs: constant decay from the first step
        train = resolve_config(preset).train
        assert not train.ema_warmup and ema_decay(train, 0) == 0.999


def test_non_finite_loss_stops_with_stage_name(cfg, tmp_path):
    trainer = Trainer(cfg, tmp_path)
    real, wrong, emb = _batch(cfg)
    real[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"D1 \(16 px\)"):
        trainer.train_step(real, wrong, emb)


CAPTIONS = ["a red bird", "a blue bird with black wings", "red wings", "a bird"]


def test_damsm_term_scores_the_last_branch_only(cfg, tmp_path):
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"damsm_coef": 5.0})})
    trainer = Trainer(cfg, tmp_path)
    real, wrong, emb = _batch(cfg)
    with pytest.raises(TrainingError, match="damsm_coef"):
        trainer.train_step(real, wrong, emb)
    trainer.attach_text_encoder(make_damsm_encoder(cfg.text))
    scored = []
    original = trainer.damsm.images
    trainer.damsm.images = lambda images: scored.append(tuple(images.shape)) or original(images)
    text = trainer.damsm.captions(CAPTIONS, torch.tensor([0, 1, 2, 3]))
    assert text.words.shape[:2] == (4, cfg.text.dim) and not text.words.requires_grad
    stats = trainer.train_step(real, wrong, emb, text)
    assert scored == [(4, 3, 32, 32)]  # lambda only on the last (32 px) branch, once per step
    t = cfg.train
    rest = stats["G/adversarial"] + t.kl_coef * stats["KL"] + t.color_coef * stats["color"]
    damsm = stats["DAMSM/word"] + stats["DAMSM/sentence"]
    assert damsm > 0
    assert stats["G/total"].item() == pytest.approx((rest + 5.0 * damsm).item(), rel=1e-5)
    # the frozen encoders never train
    assert not any(p.requires_grad for p in trainer.damsm.encoder.image_encoder.parameters())


def test_damsm_branches_all_scores_every_branch_with_the_mean(cfg, tmp_path):
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"damsm_coef": 5.0, "damsm_branches": "all"})})
    trainer = Trainer(cfg, tmp_path)
    trainer.attach_text_encoder(make_damsm_encoder(cfg.text))
    scored, losses = [], []
    original = trainer.damsm.images
    trainer.damsm.images = lambda images: scored.append(tuple(images.shape)) or original(images)
    real, wrong, emb = _batch(cfg)
    text = trainer.damsm.captions(CAPTIONS, torch.tensor([0, 1, 2, 3]))
    term = next(t for t in trainer.terms if isinstance(t, DAMSM))

    def damsm_loss(branches):  # the term reads only these fields of the step
        return term.generator_loss(SimpleNamespace(fakes=list(branches), text=text, damsm=trainer.damsm))[0]

    with torch.no_grad():
        fakes, _, _ = trainer.G(torch.zeros(4, cfg.model.z_dim), emb, torch.zeros(4, cfg.model.eps_dim))
        for f in fakes:
            losses.append(damsm_loss([f]))
        mean = damsm_loss(fakes)
    assert mean.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-6)
    scored.clear()
    stats = trainer.train_step(real, wrong, emb, text)
    assert scored == [(4, 3, 8, 8), (4, 3, 16, 16), (4, 3, 32, 32)]
    assert stats["DAMSM/word"] > 0


def test_feature_discriminator_trains_on_frozen_damsm_features_and_resumes(cfg, tmp_path):
    on = cfg.model_copy(update={"train": cfg.train.model_copy(update={"feature_d_coef": 0.5})})
    trainer = Trainer(on, tmp_path / "a")
    encoder = make_damsm_encoder(cfg.text)
    trainer.attach_text_encoder(encoder)
    real, wrong, emb = _batch(cfg)
    text = trainer.damsm.captions(CAPTIONS, torch.tensor([0, 1, 2, 3]))
    before = [p.detach().clone() for p in trainer.term_modules["F"].parameters()]
    frozen = [p.detach().clone() for p in trainer.damsm.encoder.image_encoder.parameters()]
    stats = trainer.train_step(real, wrong, emb, text)
    assert {"F/real", "F/wrong", "F/fake", "F/total", "G/feature_d"} <= set(stats)
    t = on.train
    rest = stats["G/adversarial"] + t.kl_coef * stats["KL"] + t.color_coef * stats["color"]
    assert stats["G/total"].item() == pytest.approx((rest + 0.5 * stats["G/feature_d"]).item(), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.term_modules["F"].parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(frozen, trainer.damsm.encoder.image_encoder.parameters(), strict=True))
    # the head and its optimiser are checkpointed: a resumed trainer takes the same next step
    tensors, meta = trainer.state_tensors()
    assert any(k.startswith("F.") for k in tensors) and any(k.startswith("opt_F.") for k in tensors)
    path = save_checkpoint(tmp_path / "ckpt", trainer.step, tensors, {**meta, "config": on.model_dump(mode="json")}, 2)
    resumed = Trainer(on, tmp_path / "b")
    resumed.attach_text_encoder(encoder)
    resumed.load_state(load_checkpoint(path))
    a = trainer.train_step(real, wrong, emb, text)
    b = resumed.train_step(real, wrong, emb, text)
    assert a["F/total"].item() == b["F/total"].item() and a["G/total"].item() == b["G/total"].item()
    # off: no head, no keys
    assert "F" not in Trainer(cfg, tmp_path / "off").term_modules
    assert not any(k.startswith("F.") for k in Trainer(cfg, tmp_path / "off").state_tensors()[0])
    with pytest.raises(ConfigError, match="feature_d_coef"):
        resolve_config("tiny", overrides={"train.feature_d_coef": 1.0, "model.arch": "attngan"})


def test_mode_seeking_pairs_half_a_batch_and_off_is_unchanged(cfg, tmp_path):
    on = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ms_coef": 1.0})})
    trainer = Trainer(on, tmp_path / "on")
    seen = []
    original = trainer.G_forward
    trainer.G_forward = lambda z, c, eps, **kw: seen.append(c.clone()) or original(z, c, eps, **kw)
    real, wrong, emb = _batch(cfg)
    stats = trainer.train_step(real, wrong, emb)
    # 4 images plus 2 more of the first two captions, one G pass; D and the other terms see 4
    assert len(seen) == 1 and torch.equal(seen[0], torch.cat([emb, emb[:2]]))
    t = on.train
    rest = stats["G/adversarial"] + t.kl_coef * stats["KL"] + t.color_coef * stats["color"]
    assert 0 < stats["mode_seeking"] < 1e5
    assert stats["G/total"].item() == pytest.approx((rest + stats["mode_seeking"]).item(), rel=1e-5)
    off = Trainer(cfg, tmp_path / "off")
    assert "mode_seeking" not in off.train_step(real, wrong, emb)
    with pytest.raises(ConfigError, match="ms_coef"):
        resolve_config("tiny", overrides={"train.ms_coef": 1.0, "model.arch": "attngan"})


def test_epoch_batches_deterministic_sharded_and_resumable():
    a = EpochBatches(50, 8, seed=3, epoch=2, ctx=DistContext())
    b = EpochBatches(50, 8, seed=3, epoch=2, ctx=DistContext())
    assert a.batches == b.batches and len(a) == 6  # drop_last
    assert EpochBatches(50, 8, seed=3, epoch=3, ctx=DistContext()).batches != a.batches
    assert EpochBatches(50, 8, seed=3, epoch=2, ctx=DistContext(), start=4).batches == a.batches[4:]
    r0 = EpochBatches(50, 4, 3, 2, DistContext(0, 2))
    r1 = EpochBatches(50, 4, 3, 2, DistContext(1, 2))
    assert len(r0) == len(r1) == 6
    assert not set(sum(r0.batches, [])) & set(sum(r1.batches, []))


def test_checkpoint_round_trip_keeps_last_k_and_detects_tampering(cfg, tmp_path):
    trainer = Trainer(cfg, tmp_path)
    trainer.train_step(*_batch(cfg))
    tensors, meta = trainer.state_tensors()
    directory = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        save_checkpoint(directory, step, tensors, meta, keep=3)
    paths = list_checkpoints(directory)
    assert [p.name for p in paths] == ["step-00000002.safetensors", "step-00000003.safetensors", "step-00000004.safetensors"]
    assert not list(directory.glob("*.tmp"))
    ckpt = load_checkpoint(paths[-1])
    assert ckpt.step == 4 and torch.equal(ckpt.tensors["G.ca.fc.weight"], trainer.G.ca.fc.weight)

    data = bytearray(paths[-1].read_bytes())
    data[-10] ^= 0xFF  # one flipped byte
    paths[-1].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the hash"):
        load_checkpoint(paths[-1])
    paths[-2].write_bytes(paths[-2].read_bytes()[:100])  # truncated
    fallback = latest_checkpoint(directory)
    assert fallback is not None and fallback.step == 2
    json.loads(paths[0].with_suffix(".json").read_text())  # sidecar is plain JSON


def test_load_state_restores_everything(cfg, tmp_path):
    first = Trainer(cfg, tmp_path / "a")
    first.train_step(*_batch(cfg))
    first.step, first.epoch, first.batch_in_epoch = 1, 0, 1
    path = first.save()
    second = Trainer(cfg, tmp_path / "b")
    second.load_state(load_checkpoint(path))
    assert second.step == 1 and second.batch_in_epoch == 1
    a, b = first.state_tensors()[0], second.state_tensors()[0]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the next step is identical
    s1 = first.train_step(*_batch(cfg, seed=1))
    s2 = second.train_step(*_batch(cfg, seed=1))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_checkpoint_of_other_architecture_is_refused(cfg, tmp_path):
    trainer = Trainer(cfg, tmp_path / "a")
    path = trainer.save()
    other = Trainer(resolve_config("tiny", overrides={"model.stage_num": 2, "train.device": "cpu"}), tmp_path / "b")
    with pytest.raises(CheckpointError, match="stage_num: 3 vs 2"):
        other.load_state(load_checkpoint(path))


def test_checkpoint_from_before_a_model_field_existed_is_accepted(cfg, tmp_path):
    """Fields added later (arch, the levers) are filled with their defaults before comparing, so runs
    written by older versions still resume; a real difference is still refused."""
    trainer = Trainer(cfg, tmp_path)
    older = {k: v for k, v in cfg.model.model_dump(mode="json").items() if k not in ("arch", "d_projection", "d_norm")}
    trainer._check_architecture(older, "an older checkpoint")
    with pytest.raises(CheckpointError, match="ngf"):
        trainer._check_architecture({**older, "ngf": cfg.model.ngf * 2}, "an older checkpoint")


def test_fast_path_matches_plain_path(tmp_path):
    """channels_last + fused Adam + foreach EMA + the split condition conv + stacked D passes give the
    same training as eager NCHW for-loop Adam, the refine stages' joint conv over the full
    concatenation and three separate D passes."""
    results = []
    for fast in (False, True):
        cfg = resolve_config(
            "tiny", overrides={"train.device": "cpu", "train.channels_last": fast, "train.fused_optimizer": fast,
                               "train.split_condition_conv": fast, "train.stacked_d_passes": fast}
        )
        trainer = Trainer(cfg, tmp_path / str(fast))
        for step in range(3):
            real, wrong, emb = _batch(cfg, seed=step)
            fmt = trainer.memory_format
            trainer.train_step([r.contiguous(memory_format=fmt) for r in real], [w.contiguous(memory_format=fmt) for w in wrong], emb)
        results.append({k: v.clone() for k, v in trainer.state_tensors()[0].items() if k.startswith(("G", "D"))})
    plain, fast = results
    for key in plain:
        assert torch.allclose(plain[key].float(), fast[key].float(), rtol=1e-3, atol=1e-4), key


def test_compile_failure_falls_back_to_eager(cfg, tmp_path, monkeypatch, caplog):
    compiled = resolve_config("tiny", overrides={"train.device": "cpu", "train.compile": True})

    def broken_compile(module, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("backend compiler failed: no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    trainer = Trainer(compiled, tmp_path / "c")
    eager = Trainer(cfg.model_copy(update={"train": compiled.train.model_copy(update={"compile": False})}), tmp_path / "e")
    logger = logging.getLogger("stackgan2")
    logger.addHandler(caplog.handler)  # the CLI may have turned propagation off in this process
    try:
        s1 = trainer.train_step(*_batch(cfg))
    finally:
        logger.removeHandler(caplog.handler)
    s2 = eager.train_step(*_batch(cfg))
    assert "torch.compile failed" in caplog.text
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def _tiny_dataset(cfg):
    import numpy as np

    from stackgan2.data import build_dataset

    dataset = build_dataset(cfg.data, "train", cfg.model.resolutions, augment=True, seed=0)
    rng = np.random.default_rng(0)
    dataset.set_embeddings(rng.standard_normal((len(dataset), 10, cfg.model.text_dim)).astype(np.float32))
    return dataset


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_on_nan_policy(tmp_path, policy):
    from stackgan2.training.trainer import NonFiniteLoss

    cfg = resolve_config("tiny", overrides={"train.device": "cpu", "train.on_nan": policy, "train.max_steps": 8})
    trainer = Trainer(cfg, tmp_path / "run")
    original = trainer._train_step

    def poisoned(real, wrong, embedding, text):
        if trainer.step == 5:  # the 6th step goes wrong, after the checkpoint at step 4
            raise NonFiniteLoss("non-finite D2 (32 px) loss term fake at step 6")
        return original(real, wrong, embedding, text)

    trainer._train_step = poisoned
    dataset = _tiny_dataset(cfg)
    if policy == "stop":
        with pytest.raises(TrainingError, match=r"D2 \(32 px\).*training stopped, the last checkpoint is intact"):
            trainer.fit(dataset)
        assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step-00000004.safetensors"]
        return
    result = trainer.fit(dataset)
    assert result.steps == 8
    records = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    skipped = [r for r in records if r.get("skipped")]
    assert len(skipped) == 1 and skipped[0]["step"] == 6 and skipped[0]["restored_from_step"] == 4


def test_pruning_never_leaves_a_listed_checkpoint_without_its_sidecar(tmp_path, monkeypatch):
    """Pruning unlinks the tensor file before the sidecar, so a kill between the two leaves only a stale
    sidecar (not listed, removed at the next save) rather than an old sidecar-less checkpoint."""
    from pathlib import Path

    from stackgan2.training.checkpoint import list_checkpoints, save_checkpoint

    tensors = {"w": torch.zeros(2)}
    for step in (1, 2):
        save_checkpoint(tmp_path, step, tensors, {}, keep=2)
    real_unlink = Path.unlink

    def killed_before_sidecar(self, missing_ok=False):
        if self.suffix == ".json":
            raise KeyboardInterrupt("killed")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", killed_before_sidecar)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, tensors, {}, keep=2)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002.safetensors", "step-00000003.safetensors"]
    assert (tmp_path / "step-00000001.json").exists()  # the stale sidecar, invisible to the loader
    save_checkpoint(tmp_path, 4, tensors, {}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000003.json", "step-00000003.safetensors", "step-00000004.json", "step-00000004.safetensors"]
