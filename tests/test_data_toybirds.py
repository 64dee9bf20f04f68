"""toy-birds: deterministic procedural birds, their captions, attributes and the render cache."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from stackgan2.cli.main import app
from stackgan2.config import DataConfig, ExperimentConfig, resolve_config
from stackgan2.data import build_dataset
from stackgan2.data import toybirds as toy
from stackgan2.data.storage import parallel_map

# sha256 of images 0-3 of the test split, seed 7, 48 px, per framing. Every machine must produce these
# bytes; a deliberate change to the drawing bumps RENDERER_VERSION and these values together.
GOLDEN_SHA256 = {"scene": "690b53effe2667aea6cffc5bfa3e917ceb8cf0b2197a58163e90e0949a04dde6",
                 "bird": "aae66ed495c4cb98d05affbce7a881708069e1ec8cf1876591a0cc384081ae0d"}
# sha256 of images 0-7 (seed, split id, size) as renderer version 1 drew them, before data.toy_framing;
# the scene framing keeps those pictures.
VERSION_1_SHA256 = {(0, 0, 32): "e024a8e20fe1288cb63d585738c9b9c216331e895e995ce8a9be58d577308745",
                    (123, 1, 40): "cd536ac2d8d470943a2e09bcc9900715134fa52e3a3e1d031d70dab1bb1315c4"}


def _config(tmp_path: Path, **overrides) -> DataConfig:
    values = {"toy_train_size": 12, "toy_test_size": 6, "toy_render_size": 32, "cache_dir": tmp_path / "cache"}
    return DataConfig(**(values | overrides))


@pytest.mark.parametrize("framing", ["scene", "bird"])
def test_renders_are_byte_identical_everywhere(framing: str) -> None:
    digest = hashlib.sha256()
    for index in range(4):
        image = toy.render_image((7, 1, index, 48, framing))
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        digest.update(image.tobytes())
    assert digest.hexdigest() == GOLDEN_SHA256[framing], "toy-birds pixels changed: bump RENDERER_VERSION and GOLDEN_SHA256"


def test_scene_framing_draws_the_pictures_of_version_1() -> None:
    for (seed, split_id, size), expected in VERSION_1_SHA256.items():
        for framing in ((), ("scene",)):  # a 4-tuple item is the scene framing
            digest = hashlib.sha256()
            for index in range(8):
                digest.update(toy.render_image((seed, split_id, index, size, *framing)).tobytes())
            assert digest.hexdigest() == expected, (seed, split_id, size, framing)


@pytest.mark.parametrize("framing", ["scene", "bird"])
def test_worker_processes_give_the_same_bytes(framing: str) -> None:
    items = [(3, 0, index, 24, framing) for index in range(16)]
    serial = [image.tobytes() for image in map(toy.render_image, items)]
    parallel = [image.tobytes() for image in parallel_map(toy.render_image, items, processes=2, chunksize=2)]
    assert parallel == serial == [image.tobytes() for image in map(toy.render_image, items)]
    assert len(set(serial)) == len(serial)


def _bird_box(layer: toy._Layer) -> tuple[int, int, int, int]:
    """y0, x0, y1, x1 of the bird's own parts (every label after BRANCH and LEAF) on a render's layer."""
    rows, cols = (np.flatnonzero((layer.labels > toy.LEAF).any(axis=axis)) for axis in (1, 0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def test_bird_framing_frames_the_bird_as_stackgan_crops_cub() -> None:
    sides: dict[str, list[float]] = {"scene": [], "bird": []}
    for index in range(20):
        for framing, side in sides.items():
            _, layer = toy._render(toy.RenderItem(0, 0, index, 32, framing))
            y0, x0, y1, x1 = _bird_box(layer)
            side.append(max(y1 - y0, x1 - x0) / layer.size)
            if framing == "scene":
                assert layer.view is None
                continue
            assert 1 <= layer.view.zoom <= 3
            assert abs((y0 + y1 - layer.size) / 2) <= 2 and abs((x0 + x1 - layer.size) / 2) <= 2  # centred
            if layer.view.zoom > 1:  # the square of half-side 0.75 * max(w, h) fills the canvas (StackGAN's r)
                assert side[-1] == pytest.approx(1 / 1.5, abs=0.06)
    assert np.mean(sides["bird"]) > 1.3 * np.mean(sides["scene"])
    assert all(bird >= scene - 0.02 for bird, scene in zip(sides["bird"], sides["scene"], strict=True))


def test_bird_view_leaves_the_random_draws_to_the_bird() -> None:
    rng = np.random.default_rng(5)
    names = {key: values[0] for key, values in toy.ATTRIBUTE_VALUES.items()}
    before = rng.bit_generator.state
    toy._bird_view(names, rng, 64, (0.0, 1.0))
    assert rng.bit_generator.state == before


def test_seed_changes_the_pictures() -> None:
    assert toy.render_image((0, 0, 5, 24)).tobytes() != toy.render_image((1, 0, 5, 24)).tobytes()
    assert toy.render_image((0, 0, 5, 24)).tobytes() != toy.render_image((0, 1, 5, 24)).tobytes()


def test_captions_describe_the_attributes() -> None:
    for index in range(30):
        codes = toy.sample_attributes(0, 0, index)
        captions = toy.make_captions(codes, np.random.default_rng(index))
        assert len(captions) == 10 == len(set(captions))
        body = toy.ATTRIBUTE_VALUES["body_color"][codes["body_color"]]
        body_words = {"grey": ("grey", "gray"), "purple": ("purple", "violet")}.get(body, (body,))
        assert all(any(word in caption.split() for word in body_words) for caption in captions)
        assert not any(re.search(r"\ba [aeiou]", caption) for caption in captions)
        assert all(caption == caption.lower() and "  " not in caption for caption in captions)


def test_named_attributes_reads_back_what_each_template_states() -> None:
    templates = len(toy._TEMPLATES)
    for index in range(40):
        codes = toy.sample_attributes(0, 1, index)
        captions = toy.make_captions(codes, np.random.default_rng(index), count=templates)  # every template once
        named = [toy.named_attributes(caption) for caption in captions]
        assert all(n is not None and "body_color" in n for n in named), captions
        # three templates leave the wing colour out ("a small red bird flying", ...)
        assert sum("wing_color" not in n for n in named) == 3, list(zip(captions, named, strict=True))
        pose_named = [n for n in named if "pose" in n]
        assert len(pose_named) == 5
        assert sum("wing_pattern" in n for n in named) == (0 if toy.ATTRIBUTE_VALUES["wing_pattern"][codes["wing_pattern"]] == "plain" else 3)
    assert toy.named_attributes("a small red bird") is None  # not a template caption (no pose)
    assert toy.named_attributes("a small red bird flying") == {"size", "body_color", "pose"}
    assert toy.named_attributes("this all grey bird has an orange beak") is None  # needs a beak length
    assert toy.named_attributes("this all grey bird has a long thin orange bill") == {"body_color", "wing_color", "beak_length", "beak_color"}


def test_dataset_fields(tmp_path: Path) -> None:
    dataset = build_dataset(_config(tmp_path, captions_per_image=4), "train", [8, 16], augment=False)
    assert len(dataset) == 12 and dataset.num_classes == 100
    assert set(dataset.attributes) >= {"body_color", "wing_color", "size", "beak_color"}
    assert dataset.attribute_values["body_color"][0] == "red" and len(dataset.attribute_values["wing_color"]) == 10
    assert np.array_equal(dataset.class_ids, dataset.attributes["body_color"] * 10 + dataset.attributes["wing_color"])
    assert all(len(captions) == 4 for captions in dataset.captions) and dataset.char_cnn_rnn is None
    assert dataset.images[0].shape == (32, 32, 3)
    assert np.array_equal(dataset.images[5], toy.render_image((0, 0, 5, 32)))


def test_cache_is_reused_and_keyed_on_every_input(tmp_path: Path, monkeypatch) -> None:
    cfg = _config(tmp_path)
    events = []
    build_dataset(cfg, "test", [8, 16], augment=False, progress_fn=events.append)
    assert events[-1].completed == events[-1].total == 6 and events[-1].task == "render toy-birds test"
    monkeypatch.setattr(toy, "build_image_store", lambda *a, **k: pytest.fail("rendered again"))
    build_dataset(cfg, "test", [8, 16], augment=False)
    names = {toy.store_directory(c).name for c in (
        cfg, _config(tmp_path, toy_seed=1), _config(tmp_path, toy_render_size=40),
        _config(tmp_path, toy_train_size=13), _config(tmp_path, toy_test_size=7), _config(tmp_path, toy_framing="bird"))}
    assert len(names) == 6
    assert toy.store_directory(cfg).name == f"toy-birds-v{toy.RENDERER_VERSION}-seed0-32px-train12-test6-scene"
    assert toy.store_directory(_config(tmp_path, toy_framing="bird")).name.endswith("-test6-bird")
    before = toy.store_directory(cfg)
    monkeypatch.setattr(toy, "RENDERER_VERSION", toy.RENDERER_VERSION + 1)
    assert toy.store_directory(cfg) != before


def test_default_cache_dir_follows_xdg(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = DataConfig(toy_train_size=2, toy_test_size=2, toy_render_size=16)
    assert toy.store_directory(cfg).parent == tmp_path / "xdg" / "stackgan2"


def test_interrupted_render_leaves_no_cache(tmp_path: Path, monkeypatch) -> None:
    cfg = _config(tmp_path)
    calls = []

    def render_then_die(item):
        calls.append(item)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return toy.render_image(item)

    monkeypatch.setattr(toy, "render_image", render_then_die)
    with pytest.raises(KeyboardInterrupt):
        toy.load_toy_birds(cfg, "train")
    root = toy.store_directory(cfg)
    assert list(root.iterdir()) == []
    monkeypatch.undo()
    abandoned = root / f".train.tmp-999999999-deadbeef@{socket.gethostname()}"  # as left by a SIGKILLed renderer
    abandoned.mkdir()
    (abandoned / "pixels.bin").write_bytes(b"partial")
    parts = toy.load_toy_birds(cfg, "train")
    assert len(parts.images) == 12 and sorted(os.listdir(root)) == ["train"]


def test_damaged_cache_is_rebuilt(tmp_path: Path, caplog) -> None:
    cfg = _config(tmp_path)
    parts = toy.load_toy_birds(cfg, "test")
    pixels = parts.images.directory / "pixels.bin"
    pixels.write_bytes(pixels.read_bytes()[:100])
    again = toy.load_toy_birds(cfg, "test")
    assert "discarding damaged cache" in caplog.text
    assert np.array_equal(again.images[2], toy.render_image((0, 1, 2, 32)))


def test_too_small_renders_are_upscaled_with_a_warning(tmp_path: Path, caplog) -> None:
    dataset = build_dataset(_config(tmp_path, toy_render_size=16), "test", [8, 16], augment=True)
    assert "rendered at 16 px but 16 px images need 19 px" in caplog.text
    assert [tuple(image.shape) for image in dataset[0]["images"]] == [(3, 8, 8), (3, 16, 16)]


def test_bird_framing_dataset_is_cached_apart(tmp_path: Path) -> None:
    scene = toy.load_toy_birds(_config(tmp_path), "test")
    bird = toy.load_toy_birds(_config(tmp_path, toy_framing="bird"), "test")
    assert scene.images.directory != bird.images.directory
    assert scene.captions == bird.captions and np.array_equal(scene.class_ids, bird.class_ids)
    assert np.array_equal(bird.images[3], toy.render_image((0, 1, 3, 32, "bird")))
    assert not np.array_equal(bird.images[3], scene.images[3])


def test_framing_config_defaults_to_scene_and_round_trips(tmp_path: Path) -> None:
    stored = Path(__file__).parent / "fixtures" / "pre-models" / "run-v1" / "config.json"
    assert "toy_framing" not in stored.read_text()  # written before the option existed
    assert ExperimentConfig.from_json(stored.read_text()).data.toy_framing == "scene"
    cfg = resolve_config("tiny", overrides={"data.toy_framing": "bird"})
    assert ExperimentConfig.from_json(cfg.to_json()).data.toy_framing == "bird"
    file = tmp_path / "bird.toml"
    file.write_text('[data]\ntoy_framing = "bird"\n')
    assert resolve_config("tiny", file).data.toy_framing == "bird"
    with pytest.raises(ValueError, match="toy_framing"):
        DataConfig(toy_framing="birds")


@pytest.mark.parametrize("command", [["train"], ["pretrain-text"], ["train-classifier"], ["data", "preview"],
                                     ["data", "info"], ["eval"]])
def test_every_data_command_has_the_toy_framing_flag(runner, command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "--toy-framing" in result.stdout


def test_toy_framing_flag_reaches_the_config(runner, tmp_path: Path) -> None:
    args = ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run", "--toy-framing"]
    result = runner.invoke(app, [*args, "bird"])
    assert result.exit_code == 0, result.output
    assert '"toy_framing": "bird"' in result.stdout
    result = runner.invoke(app, [*args, "birds"])
    assert result.exit_code == 2 and "data.toy_framing: Input should be 'scene' or 'bird'" in result.output
    assert not (tmp_path / "r").exists()


def test_a_run_keeps_its_framing_on_resume() -> None:
    from stackgan2.config import changed_fields
    from stackgan2.training.trainer import FIXED_ON_RESUME

    scene = resolve_config("tiny")
    assert changed_fields(scene, resolve_config("tiny", overrides={"data.toy_framing": "bird"}), FIXED_ON_RESUME) == [
        "data.toy_framing"]
