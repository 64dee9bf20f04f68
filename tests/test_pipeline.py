"""Text2ImagePipeline: loading from pipeline dirs, run dirs and checkpoints, save/load round trips,
seeding, truncation, interpolation, output files and every way a model path can be wrong."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CAPTIONS as CAPTIONS
from conftest import make_tiny_pipeline as make_pipeline
from PIL import Image
from safetensors.torch import load_file

from stackgan2.config import TextConfig
from stackgan2.errors import CheckpointError, PromptError, UsageError
from stackgan2.pipeline import (
    GENERATOR_FILE,
    MAX_IMAGES_PER_PROMPT,
    PipelineOutput,
    Text2ImagePipeline,
    contact_sheet,
    default_model,
    shipped_model_dir,
    slerp,
    slugify,
)
from stackgan2.text import PromptEncoder, TextEncoder, Vocabulary


def arrays(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def assert_same_images(a: PipelineOutput, b: PipelineOutput) -> None:
    for branch_a, branch_b in zip(a.branches, b.branches, strict=True):
        for x, y in zip(arrays(branch_a), arrays(branch_b), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def pipe() -> Text2ImagePipeline:
    return make_pipeline()


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    """The session's shared tiny training run (see conftest)."""
    return tiny_run


def test_save_load_round_trip_gives_identical_images(pipe, tmp_path):
    before = pipe(["a small red bird", "a blue bird"], num_images_per_prompt=2, seed=11)
    loaded = Text2ImagePipeline.from_pretrained(pipe.save_pretrained(tmp_path / "pipe"))
    assert_same_images(before, loaded(["a small red bird", "a blue bird"], num_images_per_prompt=2, seed=11))
    assert sorted(p.relative_to(tmp_path / "pipe").as_posix() for p in (tmp_path / "pipe").rglob("*") if p.is_file()) == [
        "config.json", "generator.safetensors",
        "text_encoder/config.json", "text_encoder/text_encoder.safetensors", "text_encoder/vocab.json",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_run_dir_checkpoint_file_and_export_give_the_same_images(run, tmp_path):
    from_run = Text2ImagePipeline.from_pretrained(run)
    checkpoint = run / "checkpoints" / "step-00000004.safetensors"
    stored = load_file(str(checkpoint))
    for key, value in from_run.generator.state_dict().items():
        torch.testing.assert_close(value, stored[f"G_ema.{key}"], rtol=0, atol=0)
    reference = from_run(["a small red bird"], num_images_per_prompt=2, seed=3)
    assert reference.resolutions == [8, 16, 32] and reference.images[0].size == (32, 32)
    assert_same_images(reference, Text2ImagePipeline.from_pretrained(checkpoint)(["a small red bird"], 2, seed=3))
    exported = Text2ImagePipeline.from_pretrained(from_run.save_pretrained(tmp_path / "export"))
    assert_same_images(reference, exported(["a small red bird"], num_images_per_prompt=2, seed=3))
    assert exported.text_encoder.image_encoder is None  # export keeps the text side only
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["format"] == "stackgan2-pipeline" and config["config"]["data"]["cache_dir"] is None
    assert from_run.step == exported.step == config["step"] == 4  # training iterations travel with the export


def test_loading_never_unpickles(run, pipe, tmp_path, monkeypatch):
    exported = pipe.save_pretrained(tmp_path / "pipe")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(target, name, refuse)
    for path in (exported, run, run / "checkpoints" / "step-00000004.safetensors"):
        Text2ImagePipeline.from_pretrained(path)


def test_fp16_export_is_smaller_and_close(pipe, tmp_path):
    full = pipe.save_pretrained(tmp_path / "fp32")
    half = pipe.save_pretrained(tmp_path / "fp16", fp16=True)
    assert (half / GENERATOR_FILE).stat().st_size < 0.6 * (full / GENERATOR_FILE).stat().st_size
    assert json.loads((half / "config.json").read_text())["dtype"] == "float16"
    loaded = Text2ImagePipeline.from_pretrained(half)
    assert next(loaded.generator.parameters()).dtype == torch.float32
    a = np.stack(arrays(pipe("a red bird", seed=1).images)).astype(int)
    b = np.stack(arrays(loaded("a red bird", seed=1).images)).astype(int)
    assert np.abs(a - b).max() <= 8


def test_same_seed_same_images_and_per_image_seeds(pipe):
    out = pipe(["a small red bird"], num_images_per_prompt=3, seed=7)
    assert_same_images(out, pipe(["a small red bird"], num_images_per_prompt=3, seed=7))
    shifted = pipe(["a small red bird"], num_images_per_prompt=1, seed=9)  # image 2 of seed 7 = image 0 of seed 9
    np.testing.assert_array_equal(np.asarray(out.images[2]), np.asarray(shifted.images[0]))
    assert not np.array_equal(np.asarray(out.images[0]), np.asarray(out.images[1]))
    batched_one_by_one = pipe(["a small red bird"], num_images_per_prompt=3, seed=7, batch_size=1)
    assert_same_images(out, batched_one_by_one)  # one row per CPU forward: the batch size changes no pixel


@pytest.mark.skipif(shipped_model_dir() is None, reason="no pretrained toy-birds model in assets/toy-birds")
def test_images_do_not_depend_on_the_rows_beside_them():
    """On the shipped model (wide enough for MKL/oneDNN to take other code paths at 1-3 rows; the tiny
    test model is not) an image is identical alone, in a batch and in another order."""
    pipe = Text2ImagePipeline.from_pretrained(shipped_model_dir(), device="cpu")
    embeddings = pipe.text_encoder.encode(CAPTIONS).embeddings
    alone = [pipe.render(embeddings[i % 2 : i % 2 + 1], [100 + i]) for i in range(5)]
    rows = embeddings[torch.tensor([i % 2 for i in range(5)])]
    together = pipe.render(rows, [100 + i for i in range(5)], batch_size=5)
    shuffled = pipe.render(rows[[4, 0]], [104, 100], batch_size=2)
    for branch in range(len(together)):
        for i in range(5):
            np.testing.assert_array_equal(np.asarray(alone[i][branch][0]), np.asarray(together[branch][i]))
        for j, i in enumerate([4, 0]):
            np.testing.assert_array_equal(np.asarray(shuffled[branch][j]), np.asarray(together[branch][i]))


def test_random_seed_is_reported_and_reproduces(pipe):
    out = pipe("a small red bird")
    assert 0 <= out.seed < 2**31
    assert_same_images(out, pipe("a small red bird", seed=out.seed))


def test_output_structure_and_unknown_words(pipe):
    out = pipe(["a small red bird", "a purple bird"], num_images_per_prompt=2, seed=0)
    assert [len(branch) for branch in out.branches] == [4, 4, 4]
    assert [branch[0].size for branch in out.branches] == [(8, 8), (16, 16), (32, 32)]
    assert out.images is out.branches[-1] and all(image.mode == "RGB" for image in out.images)
    assert out.captions == ["a small red bird"] * 2 + ["a purple bird"] * 2 and out.indices == [0, 1, 0, 1]
    assert out.unknown == [[], ["purple"]] and out.truncated == [False, False]
    strips = out.strips()
    assert len(strips) == 4 and strips[0].size == (3 * 32 + 2 * 2, 32)
    # the strip's last panel is the final image itself
    np.testing.assert_array_equal(np.asarray(strips[1])[:, -32:], np.asarray(out.images[1]))


def test_truncation_clamps_z(pipe):
    seen: list[torch.Tensor] = []
    hook = pipe.generator.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        untruncated = pipe("a red bird", num_images_per_prompt=8, seed=0)
        truncated = pipe("a red bird", num_images_per_prompt=8, seed=0, truncation=0.5)
        huge = pipe("a red bird", num_images_per_prompt=8, seed=0, truncation=1e9)
    finally:
        hook.remove()
    seen = list(torch.cat(seen).split(8))  # a CPU forward computes one row: each call's 8 rows of z
    assert seen[0].abs().max() > 0.5 and seen[1].abs().max() <= 0.5
    torch.testing.assert_close(seen[1], seen[0].clamp(-0.5, 0.5))
    assert_same_images(untruncated, huge)
    assert any(not np.array_equal(x, y) for x, y in zip(arrays(untruncated.images), arrays(truncated.images), strict=True))
    for bad in (0.0, -1.0):
        with pytest.raises(UsageError, match="truncation"):
            pipe("a red bird", seed=0, truncation=bad)


@pytest.mark.parametrize("arch", ["stackgan2", "attngan"])
def test_interpolate(pipe, arch):
    """AttnGAN: the word features blend too (prompts of equal word count); the ends are the prompts' images."""
    pipe = pipe if arch == "stackgan2" else make_pipeline(arch=arch)
    seen: list[torch.Tensor] = []
    hook = pipe.generator.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        strip = pipe.interpolate("a small red bird", "a large blue bird", steps=5, seed=4)
        moving = pipe.interpolate("a small red bird", "a large blue bird", steps=5, seed=4, interpolate_noise=True)
    finally:
        hook.remove()
    seen = list(torch.cat(seen).split(5))  # a CPU forward computes one row: each strip's 5 rows of z
    assert len(strip.images) == 5 and strip.captions[0] == "a small red bird" and strip.captions[-1] == "a large blue bird"
    np.testing.assert_array_equal(np.asarray(strip.images[0]), np.asarray(pipe("a small red bird", seed=4).images[0]))
    np.testing.assert_array_equal(np.asarray(strip.images[-1]), np.asarray(pipe("a large blue bird", seed=4).images[0]))
    assert torch.equal(seen[0], seen[0][:1].expand(5, -1))          # fixed noise: only the text moves
    torch.testing.assert_close(seen[1][0], seen[0][0])              # noise slerps from seed 4 ...
    torch.testing.assert_close(seen[1][-1], pipe._noise([5])[0][0])  # ... to seed 5
    np.testing.assert_array_equal(np.asarray(moving.images[0]), np.asarray(strip.images[0]))
    for steps in (1, 65):
        with pytest.raises(UsageError, match="steps"):
            pipe.interpolate("a red bird", "a blue bird", steps=steps)
    if arch == "attngan":
        words = []
        hook = pipe.generator.register_forward_pre_hook(lambda m, args, kwargs: words.append(kwargs["words"]), with_kwargs=True)
        try:
            pipe.interpolate("a small red bird", "a large blue bird", steps=3, seed=4)
        finally:
            hook.remove()
        words = [torch.cat(words)]  # the 3 one-row forwards' word features
        ends = pipe.encode(["a small red bird", "a large blue bird"]).words
        assert torch.allclose(words[0][1, :, :4], ends.mean(dim=0)) and words[0].shape[2] == pipe.text_encoder.config.max_words
        for start, end in (("a red bird", "a small blue bird"), ("a red zzqx bird", "a red small zzqx")):
            with pytest.raises(UsageError, match="same word count"):
                pipe.interpolate(start, end, steps=3)


def test_slerp_keeps_endpoints_and_norm():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path[2], torch.tensor([1.0, 2.0]) / 2**0.5)  # sin(pi/4)/sin(pi/2) of each
    torch.testing.assert_close(slerp(a, 3 * a, torch.tensor([0.5]))[0], 2 * a)  # parallel: linear


@pytest.mark.parametrize(
    "prompts, kwargs, error, message",
    [
        ([""], {}, PromptError, "contains no words"),
        (["zebra qzx"], {}, PromptError, "no word the text encoder knows"),
        ([], {}, PromptError, "no prompt"),
        (["a red bird"], {"num_images_per_prompt": 0}, UsageError, "between 1 and 256"),
        (["a red bird"], {"num_images_per_prompt": MAX_IMAGES_PER_PROMPT + 1}, UsageError, "between 1 and 256"),
        (["a red bird"], {"seed": -1}, UsageError, "seed must be"),
    ],
)
def test_bad_generation_input(pipe, prompts, kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        pipe(prompts, **kwargs)
    assert "\n" not in str(info.value)


def _flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "model not found"),
        ("plain-file", "is not a model"),
        ("empty-dir", "is not a model"),
        ("flipped-generator", "does not match its hash"),
        ("truncated-generator", "does not match its hash"),
        ("flipped-text-encoder", "does not match its hash"),
        ("garbage-config", "not valid JSON"),
        ("foreign-config", "is not a stackgan2 pipeline config"),
        ("no-text-encoder", "text_encoder/config.json is missing"),
        ("wrong-architecture", "invalid config|does not match its model config"),
    ],
)
def test_bad_pipeline_directories(pipe, tmp_path, damage, message):
    model = pipe.save_pretrained(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    if damage == "missing":
        model = tmp_path / "nope"
    elif damage == "plain-file":
        model = model / "config.json"
    elif damage == "empty-dir":
        model = tmp_path / "empty"
        model.mkdir()
    elif damage == "flipped-generator":
        _flip_byte(model / GENERATOR_FILE)
    elif damage == "truncated-generator":
        (model / GENERATOR_FILE).write_bytes((model / GENERATOR_FILE).read_bytes()[:1000])
    elif damage == "flipped-text-encoder":
        _flip_byte(model / "text_encoder" / "text_encoder.safetensors")
    elif damage == "garbage-config":
        (model / "config.json").write_text('{"format": "stackgan2-pip')
    elif damage == "foreign-config":
        (model / "config.json").write_text('{"name": "something else"}')
    elif damage == "no-text-encoder":
        shutil.rmtree(model / "text_encoder")
    elif damage == "wrong-architecture":
        config["config"]["model"]["ngf"] = 16
        (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as info:
        Text2ImagePipeline.from_pretrained(model)
    assert "\n" not in str(info.value)


def test_configs_of_other_versions_load_unless_the_architecture_is_unknown(pipe, tmp_path):
    model = pipe.save_pretrained(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["config"]["train"]["option_of_another_version"] = 1
    config["config"]["data"]["removed_option"] = "x"
    config["config"]["notes"] = "top-level key from a newer version"
    (model / "config.json").write_text(json.dumps(config))
    assert_same_images(pipe("a red bird", seed=0), Text2ImagePipeline.from_pretrained(model)("a red bird", seed=0))
    config["config"]["model"]["attention"] = True
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid config"):
        Text2ImagePipeline.from_pretrained(model)


def test_bad_runs_and_checkpoints(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    checkpoint = copy / "checkpoints" / "step-00000004.safetensors"
    _flip_byte(checkpoint)
    with pytest.raises(CheckpointError, match="does not match the hash"):
        Text2ImagePipeline.from_pretrained(checkpoint)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):  # the only checkpoint is bad
        Text2ImagePipeline.from_pretrained(copy)
    shutil.copy(run / "checkpoints" / checkpoint.name, checkpoint)
    shutil.rmtree(copy / "text_encoder")
    with pytest.raises(CheckpointError, match="no text encoder at"):
        Text2ImagePipeline.from_pretrained(checkpoint)
    text = TextConfig(dim=8, word_dim=6)  # another run's encoder: 8-d instead of the tiny preset's 16-d
    vocab = Vocabulary.build(CAPTIONS)
    PromptEncoder(vocab, TextEncoder(len(vocab), text.word_dim, text.dim), text).save(copy / "text_encoder")
    with pytest.raises(CheckpointError, match="gives 8-d embeddings but the generator expects model.text_dim = 16"):
        Text2ImagePipeline.from_pretrained(copy)
    (copy / "checkpoints" / "notes.txt").write_text("not a model")
    with pytest.raises(CheckpointError, match="is not a model"):
        Text2ImagePipeline.from_pretrained(copy / "checkpoints" / "notes.txt")


def test_save_pretrained_replaces_only_a_previous_export(pipe, tmp_path):
    target = pipe.save_pretrained(tmp_path / "model")
    make_pipeline(seed=1).save_pretrained(target)  # replacing an export is fine
    assert not np.array_equal(
        np.asarray(pipe("a red bird", seed=0).images[0]),
        np.asarray(Text2ImagePipeline.from_pretrained(target)("a red bird", seed=0).images[0]),
    )
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="holds other files"):
        pipe.save_pretrained(tmp_path / "busy")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        pipe.save_pretrained(tmp_path / "file")
    assert (tmp_path / "busy" / "thesis.tex").read_text() == "precious"


def test_output_save_names_and_formats(pipe, tmp_path):
    out = pipe(["a small red bird!", "A small red bird", "a blue bird"], num_images_per_prompt=2, seed=5)
    paths = out.save(tmp_path / "images")
    assert [p.name for p in paths] == [
        "a-small-red-bird_seed5_000_32px.png", "a-small-red-bird_seed5_001_32px.png",
        "a-small-red-bird-2_seed5_000_32px.png", "a-small-red-bird-2_seed5_001_32px.png",
        "a-blue-bird_seed5_000_32px.png", "a-blue-bird_seed5_001_32px.png",
    ]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(p.name for p in paths)
    np.testing.assert_array_equal(np.asarray(Image.open(paths[4])), np.asarray(out.images[4]))
    strips = out.save(tmp_path / "strips", all_stages=True)
    assert strips[0].name == "a-small-red-bird_seed5_000_8-16-32px.png" and Image.open(strips[0]).size == (100, 32)
    [grid] = out.save(tmp_path / "grid", grid=True)
    assert grid.name == "grid_seed5_6images_32px.png" and Image.open(grid).width > 2 * 32
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        out.save(tmp_path / "taken")


def test_contact_sheet_layout():
    images = [Image.new("RGB", (32, 32), "red")] * 5
    sheet = contact_sheet(images, ["a bird"] * 4 + ["a very long caption " * 10], columns=2)
    assert sheet.width == 6 + 2 * (96 + 6)  # cells are at least 96 px wide for the captions
    assert sheet.height > 3 * (32 + 6)
    assert sheet.getpixel((6 + 32, 6 + 1)) == (255, 0, 0)  # first image centred in its cell
    with pytest.raises(ValueError, match="one caption per image"):
        contact_sheet(images, ["x"], columns=2)


def test_slugify():
    assert slugify("A small, RED bird!") == "a-small-red-bird"
    assert slugify("über-große Vögel") == "uber-groe-vogel"
    assert slugify("🐦 !!") == "prompt"
    assert len(slugify("word " * 40)) <= 48 and not slugify("word " * 40).endswith("-")


def test_missing_shipped_model_names_the_option(monkeypatch):
    monkeypatch.setattr("stackgan2.pipeline.shipped_model_dir", lambda: None)
    with pytest.raises(CheckpointError, match="--model"):
        default_model()
