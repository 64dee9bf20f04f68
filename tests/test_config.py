import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from stackgan2.cli.main import app
from stackgan2.config import PRESETS, ExperimentConfig, resolve_config
from stackgan2.errors import ConfigError


def test_presets_resolve_and_birds_matches_official():
    for name in PRESETS:
        assert resolve_config(name).preset == name
    birds = resolve_config("birds")  # code/cfg/birds_3stages.yml
    assert (birds.model.ngf, birds.model.ndf, birds.model.z_dim, birds.model.c_dim, birds.model.r_num) == (64, 64, 100, 128, 2)
    assert birds.model.text_dim == 1024 and birds.train.embeddings == "char-cnn-rnn"
    t = birds.train
    assert (t.batch_size, t.epochs, t.lr_g, t.lr_d, t.beta1, t.beta2) == (24, 600, 2e-4, 2e-4, 0.5, 0.999)
    assert (t.uncond_coef, t.kl_coef, t.color_coef, t.checkpoint_every) == (1.0, 2.0, 0.0, 2000)


def test_precedence_defaults_preset_file_flags(tmp_path: Path):
    file = tmp_path / "c.toml"
    file.write_text("[model]\nstage_num = 2\nngf = 32\n[train]\nbatch_size = 5\n")
    cfg = resolve_config("tiny", file, {"model.stage_num": 1, "train.batch_size": None})
    assert cfg.model.stage_num == 1  # flag beats file
    assert cfg.model.ngf == 32  # file beats preset
    assert cfg.train.batch_size == 5  # None flag = not given
    assert cfg.model.base_size == 8  # preset beats default
    assert cfg.train.beta1 == 0.5  # default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.stage_num": 0}, "model.stage_num"),
        ({"model.stage_num": 5}, "model.stage_num"),
        ({"model.base_size": 12}, "power of two"),
        ({"model.ngf": -4}, "model.ngf"),
        ({"model.ngf": 6, "model.stage_num": 3}, "divisible by 4"),
        ({"train.epochs": 0}, "train.epochs"),
        ({"train.batch_size": 0}, "train.batch_size"),
    ],
)
def test_invalid_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("toy", overrides=overrides)


def test_unknown_preset_and_unknown_key(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        resolve_config("huge")
    file = tmp_path / "bad.toml"
    file.write_text("[model]\nstagenum = 3\n")
    with pytest.raises(ConfigError, match="model.stagenum: unknown key"):
        resolve_config("toy", file)
    file.write_text("[model]\nstage_num = 'three'\n")
    with pytest.raises(ConfigError, match="model.stage_num"):
        resolve_config("toy", file)
    file.write_text("not toml [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config("toy", file)


# Options removed after commit 025f5e8 (the quality study measured no gain), with the value that meant "off".
REMOVED_OFF = {"hard_wrong": 0.0, "damsm_augment": False, "damsm_swap_negatives": 0}
REMOVED_ON = {"hard_wrong": 0.5, "damsm_augment": True, "damsm_swap_negatives": 4}
REMOVED_FLAGS = [["--hard-wrong", "0.5"], ["--damsm-augment"], ["--no-damsm-augment"], ["--damsm-swap-negatives", "4"]]


def _stored_0_1_config() -> dict:
    """A run's config.json written by commit 025f5e8: it has the removed options, all off."""
    return json.loads((Path(__file__).parent / "fixtures/pre-models/run-stackgan2/config.json").read_text())


def test_old_configs_with_the_removed_options_off_load_as_if_they_lacked_them(tmp_path: Path):
    stored = _stored_0_1_config()
    assert {name: stored["train"][name] for name in REMOVED_OFF} == REMOVED_OFF
    without = {**stored, "train": {k: v for k, v in stored["train"].items() if k not in REMOVED_OFF}}
    cfg = ExperimentConfig.from_json(json.dumps(stored))
    assert cfg == ExperimentConfig.from_json(json.dumps(without))
    assert not REMOVED_OFF.keys() & json.loads(cfg.to_json())["train"].keys()
    file = tmp_path / "old.toml"  # a config file of commit 025f5e8 that spells the defaults out
    file.write_text("[train]\nhard_wrong = 0.0\ndamsm_augment = false\ndamsm_swap_negatives = 0\n")
    assert resolve_config("tiny", file) == resolve_config("tiny")


@pytest.mark.parametrize("name", sorted(REMOVED_ON))
def test_an_old_config_with_a_removed_option_on_is_refused_in_one_line(tmp_path: Path, name: str):
    stored = _stored_0_1_config()
    stored["train"][name] = REMOVED_ON[name]
    with pytest.raises(ConfigError) as refused:
        ExperimentConfig.from_json(json.dumps(stored))
    message = str(refused.value)
    assert message == (f"invalid stored config: train: {name} was removed after commit 025f5e8 (the quality study "
                       f"measured no gain), but this config has it on ({REMOVED_ON[name]!r}): remove the key to "
                       f"train without it, or use commit 025f5e8 to go on with it")
    file = tmp_path / "old.toml"
    file.write_text(f"[train]\n{name} = {json.dumps(REMOVED_ON[name])}\n")
    with pytest.raises(ConfigError, match=rf"^train: {name} was removed after commit 025f5e8 \(the quality study"):
        resolve_config("tiny", file)


@pytest.mark.parametrize("args", REMOVED_FLAGS)
def test_the_removed_options_are_no_train_flags(runner, tmp_path: Path, args: list[str]):
    result = runner.invoke(app, ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run", *args])
    assert result.exit_code == 2, result.output
    assert f"No such option: {args[0]}" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_config_is_frozen_and_round_trips_json():
    cfg = resolve_config("tiny")
    with pytest.raises(ValidationError):
        cfg.model.stage_num = 2  # type: ignore[misc]
    assert ExperimentConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "args",
    [["--stage-num", "0"], ["--stage-num", "5"], ["--base-size", "12"], ["--ngf", "-1"], ["--preset", "nope"], ["--stage-num", "three"]],
)
def test_info_bad_flags_exit_2_with_one_line(runner, args):
    result = runner.invoke(app, ["info", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_info_prints_counts(runner):
    result = runner.invoke(app, ["info", "--preset", "birds"])
    assert result.exit_code == 0, result.output
    assert "21,239,696" in result.output and "71,269,122" in result.output


def test_version(runner):
    from stackgan2 import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
