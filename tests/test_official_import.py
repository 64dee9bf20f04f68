"""``stackgan2 import``: official weights in their own layout -> the same images.

The official generators are re-stated in ``official_stackgan_v2`` and ``official_stackgan_v1``
(official names and forward passes); their random weights and batch-norm statistics are saved the
way the released files were (legacy ``torch.save`` format, no ``num_batches_tracked``, StackGAN-v2's
``module.`` names), imported, and the pipeline's generator must reproduce the official forward pass
for the same z, embedding and CA noise.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from official_stackgan_v1 import STAGE1_G, STAGE2_G
from official_stackgan_v2 import G_NET, randomised, released_state_dict
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from stackgan2.cli.main import app
from stackgan2.errors import PromptError
from stackgan2.io import sha256_file
from stackgan2.official import import_official
from stackgan2.pipeline import Text2ImagePipeline

TOLERANCE = 1e-5
SMALL = {"model.ngf": 16, "model.stage_num": 2}  # 64/128 px, G 0.9 M parameters: for everything but exactness


def _save(state: dict, path: Path, legacy: bool = True) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def _v1_forward(official: STAGE2_G | STAGE1_G, z, embedding, eps):
    """The official StackGAN v1 forward as (branch images, mu, logvar): Stage I's CA noise first."""
    if isinstance(official, STAGE1_G):
        _, image, mu, logvar = official(embedding, z, eps)
        return [image], mu, logvar
    low, image, mu, logvar = official(embedding, z, *eps.chunk(2, dim=1))
    return [low, image], mu, logvar


def _max_differences(official, pipe: Text2ImagePipeline, batch: int = 2, seed: int = 0) -> list[float]:
    """max |official - ours| per branch, then for mu and logvar, on the same z, embedding and CA noise."""
    g = torch.Generator().manual_seed(seed)
    model = pipe.config.model
    z, embedding, eps = (torch.randn(batch, dim, generator=g) for dim in (model.z_dim, model.text_dim, model.eps_dim))
    with torch.no_grad():
        forward = official if isinstance(official, G_NET) else lambda *args: _v1_forward(official, *args)
        expected, mu, logvar = forward(z, embedding, eps)
        images, our_mu, our_logvar = pipe.generator(z, embedding, eps)
    assert [tuple(i.shape) for i in images] == [tuple(i.shape) for i in expected]
    assert all(0.05 < i.std() < 0.95 for i in expected), "random weights should give unsaturated images"
    pairs = [*zip(expected, images, strict=True), (mu, our_mu), (logvar, our_logvar)]
    return [float((a - b).abs().max()) for a, b in pairs]


def _one_error_line(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# The released models: family, preset, file name, official network, saved from nn.DataParallel.
RELEASED = {
    "stackgan-v2-birds": ("stackgan-v2", "birds", "netG_210000.pth", lambda: G_NET(), True),  # 21.2 M parameters
    # StackGAN-Pytorch calls nn.parallel.data_parallel on the bare module: no ``module.`` names
    "stackgan-v1-coco": ("stackgan-v1", "v1-coco", "netG_epoch_90.pth", lambda: STAGE2_G(STAGE1_G()), False),  # 57.2 M
}


@pytest.fixture(scope="module", params=list(RELEASED))
def released(request, tmp_path_factory) -> tuple[str, str, nn.Module, Path]:
    """An official released generator with random weights, saved as the released file was."""
    family, preset, name, build, data_parallel = RELEASED[request.param]
    net = randomised(build())
    path = tmp_path_factory.mktemp("official") / name
    return family, preset, net, _save(released_state_dict(net, data_parallel=data_parallel), path)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[G_NET, Path, Path]:
    """A small official generator (ngf 16, 2 branches), its file and the TOML that describes it."""
    root = tmp_path_factory.mktemp("official-small")
    net = randomised(G_NET(gf_dim=16, branch_num=2), seed=1)
    (root / "small.toml").write_text("[model]\nngf = 16\nstage_num = 2\n")
    return net, _save(released_state_dict(net), root / "netG_small.pth"), root / "small.toml"


@pytest.fixture(scope="module")
def small_pipe(small, tmp_path_factory) -> Path:
    _, weights, _ = small
    out = tmp_path_factory.mktemp("imported") / "small"
    import_official(weights, "stackgan-v2", out, preset="birds", overrides=SMALL)
    return out


def test_released_model_import_reproduces_the_official_forward_pass(released, tmp_path, runner):
    family, preset, net, weights = released
    out = tmp_path / "imported"
    result = runner.invoke(app, ["import", str(weights), "--from", family, "--preset", preset, "--out", str(out)])
    assert result.exit_code == 0, result.output
    resolutions = {"stackgan-v2": "64/128/256 px", "stackgan-v1": "64/256 px"}[family]
    assert resolutions in result.stdout and "--embeddings" in result.stdout
    pipe = Text2ImagePipeline.from_pretrained(out)
    assert pipe.text_encoder is None
    assert pipe.source == {
        "family": family, "file": weights.name, "sha256": sha256_file(weights), "preset": preset,
        "tensors": len(pipe.generator.state_dict()), "documentation": pipe.source["documentation"],
    }
    batch = 2 if family == "stackgan-v2" else 1
    differences = _max_differences(net, pipe, batch)
    # The refine stages' default split joint conv sums in another order: float32 rounding only.
    literal = _max_differences(net, Text2ImagePipeline(pipe.generator.split_condition(False), None, pipe.config), batch)
    print(f"{family} {preset}: max |official - stackgan2| per branch, mu, logvar: {differences}; literal: {literal}")
    assert max(differences) <= TOLERANCE and max(literal) <= TOLERANCE, (differences, literal)


def test_four_branches_new_file_format_plain_names_with_counters(tmp_path):
    """h_net4 has one residual block (official G_NET); names without ``module.``, zip format, counters kept."""
    net = randomised(G_NET(gf_dim=16, branch_num=4), seed=2)
    weights = _save(released_state_dict(net, data_parallel=False, counters=True), tmp_path / "netG4.pth", legacy=False)
    pipe = import_official(weights, "stackgan-v2", tmp_path / "out", overrides={"model.ngf": 16, "model.stage_num": 4})
    differences = _max_differences(net, Text2ImagePipeline.from_pretrained(tmp_path / "out"), batch=1)
    assert len(differences) == 4 + 2 and max(differences) <= TOLERANCE, differences
    assert pipe.config.model.resolutions == [64, 128, 256, 512]


def test_stackgan_v1_stage_one_file_is_recognised_by_its_names(tmp_path):
    """A Stage-I file (no ``STAGE1_G.`` names) becomes a Stage-I pipeline of the v1-coco preset."""
    net = randomised(STAGE1_G(gf_dim=16), seed=4)
    weights = _save(released_state_dict(net, data_parallel=False), tmp_path / "netG_epoch_120.pth")
    pipe = import_official(weights, "stackgan-v1", tmp_path / "out", overrides={"model.ngf": 16})
    assert pipe.config.model.v1_stage == 1 and pipe.config.model.resolutions == [64]
    differences = _max_differences(net, Text2ImagePipeline.from_pretrained(tmp_path / "out"))
    assert len(differences) == 3 and max(differences) <= TOLERANCE, differences


def _mutated(small, tmp_path: Path, change) -> Path:
    net, _, _ = small
    state = released_state_dict(net)
    change(state)
    return _save(state, tmp_path / "netG_mutated.pth")


def _drop(prefix: str):
    return lambda state: [state.pop(k) for k in [k for k in state if k.startswith(prefix)]]


def _rename(old: str, new: str):
    return lambda state: state.update({k.replace(old, new): state.pop(k) for k in [k for k in state if old in k]})


@pytest.mark.parametrize(
    "change, message",
    [
        (_drop("module.h_net2.jointConv.1.running_var"), "missing tensor of an official StackGAN++"),
        (lambda s: s.update({"module.h_net2.att.conv_context.weight": torch.zeros(16, 256)}), "AttnGAN generator"),
        (lambda s: s.update({"module.h_net9.fc.weight": torch.zeros(3)}), "tensor not part of an official"),
        (_drop("module.ca_net."), "unconditional StackGAN-v2 model"),
        (_rename("module.h_net1.", "module.img_code_s16."), "discriminator"),
        (lambda s: s.update({"module.img_net1.img.0.weight": torch.zeros(3, 16, 5, 5)}), "has shape (3, 16, 5, 5)"),
        (lambda s: s.update({"module.h_net1.fc.1.running_mean": torch.zeros(8192, dtype=torch.long)}), "holds torch.int64 values"),
    ],
    ids=["missing", "attngan", "extra", "unconditional", "discriminator", "mis-shaped", "wrong-dtype"],
)
def test_wrong_tensors_one_error_naming_the_tensor_nothing_written(small, tmp_path, runner, change, message):
    _, _, config = small
    weights = _mutated(small, tmp_path, change)
    out = tmp_path / "out"
    result = runner.invoke(app, ["import", str(weights), "--from", "stackgan-v2", "--config", str(config), "--out", str(out)])
    line = _one_error_line(result)
    assert message in line, line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["netG_mutated.pth"]


def test_missing_tensor_is_named_in_official_terms(small, tmp_path):
    weights = _mutated(small, tmp_path, _drop("module.h_net2.residual.1.block.3.weight"))
    with pytest.raises(Exception, match=r"missing tensor .*: h_net2\.residual\.1\.block\.3\.weight;"):
        import_official(weights, "stackgan-v2", tmp_path / "out", overrides=SMALL)


def test_preset_that_does_not_match_the_file_names_a_tensor(small, tmp_path, runner):
    _, weights, _ = small
    result = runner.invoke(app, ["import", str(weights), "--from", "stackgan-v2", "--out", str(tmp_path / "out")])
    line = _one_error_line(result)  # the birds preset is ngf 64 and 3 branches; the file is ngf 16 and 2
    assert "preset 'birds'" in line and "h_net" in line, line
    assert not (tmp_path / "out").exists()


class _RunsACommand:
    """Unpickling this with plain ``pickle.load`` would run ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["zip", "legacy", "plain-pickle", "truncated-zip", "truncated-legacy", "not-a-dict"])
def test_unsafe_or_broken_files_are_refused_without_running_them(small, tmp_path, runner, kind):
    _, good, config = small
    marker = tmp_path / "pickle-ran-a-command"
    weights = tmp_path / "netG.pth"
    evil = {"module.ca_net.fc.weight": _RunsACommand(marker)}
    if kind in ("zip", "legacy"):
        torch.save(evil, weights, _use_new_zipfile_serialization=kind == "zip")
    elif kind == "plain-pickle":
        weights.write_bytes(pickle.dumps(evil, protocol=2))
    elif kind.startswith("truncated"):
        full = _save(released_state_dict(small[0]), tmp_path / "full.pth", legacy=kind == "truncated-legacy")
        weights.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        full.unlink()
    else:
        torch.save([torch.zeros(3)], weights)
    out = tmp_path / "out"
    result = runner.invoke(app, ["import", str(weights), "--from", "stackgan-v2", "--config", str(config), "--out", str(out)])
    line = _one_error_line(result)
    assert str(weights) in line
    if kind in ("zip", "legacy"):
        assert "refusing to load" in line and "system" in line, line
    assert not marker.exists()
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["netG.pth"]
    assert good.is_file()


def test_other_families_are_named_but_not_available_yet(small, tmp_path, runner):
    _, weights, _ = small
    for family, code in (("attngan", 2), ("stackgan-v3", 2)):
        result = runner.invoke(app, ["import", str(weights), "--from", family, "--out", str(tmp_path / "out")])
        assert result.exit_code == code and family in result.stderr, result.output
    assert not (tmp_path / "out").exists()


def test_prompts_give_one_clear_error_embeddings_work(small_pipe, small, runner, tmp_path):
    net, _, _ = small
    pipe = Text2ImagePipeline.from_pretrained(small_pipe)
    with pytest.raises(PromptError, match="no text encoder.*char-CNN-RNN"):
        pipe(["a small red bird"])
    for command in (["sample", "a small red bird"], ["interpolate", "a red bird", "a blue bird"]):
        result = runner.invoke(app, [*command, "--model", str(small_pipe), "--out", str(tmp_path / "none")])
        assert "has no text encoder" in _one_error_line(result)
    embeddings = torch.randn(3, 1024, generator=torch.Generator().manual_seed(3))
    output = pipe(embeddings=embeddings, num_images_per_prompt=2, seed=5)
    assert output.captions == ["embedding 0"] * 2 + ["embedding 1"] * 2 + ["embedding 2"] * 2
    z, eps = pipe._noise([6])  # image 1 of seed 5 is image 0 of seed 6
    with torch.no_grad():
        expected = net(z, embeddings[2:], eps)[0][-1]
    ours = torch.from_numpy(np.array(output.images[5])).permute(2, 0, 1).float() / 127.5 - 1
    assert (ours - expected[0]).abs().max() <= 1 / 127.5 + TOLERANCE  # only 8-bit rounding
    with pytest.raises(Exception, match=r"shape \(N, 1024\)"):
        pipe(embeddings=torch.zeros(2, 256))


def _char_cnn_rnn_layout(root: Path, embeddings: np.ndarray) -> Path:
    """birds/test/{char-CNN-RNN-embeddings,filenames}.pickle (Python-2 protocol) and birds/text/ captions."""
    split = root / "birds" / "test"
    split.mkdir(parents=True)
    names = [f"001.Bird/bird_{i}" for i in range(len(embeddings))]
    (split / "char-CNN-RNN-embeddings.pickle").write_bytes(pickle.dumps(embeddings, protocol=2))
    (split / "filenames.pickle").write_bytes(pickle.dumps(names, protocol=2))
    for i, name in enumerate(names):
        (root / "birds" / "text" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "birds" / "text" / f"{name}.txt").write_text(f"bird {i} caption zero\nbird {i} has a red crown\n")
    return split / "char-CNN-RNN-embeddings.pickle"


def test_sample_from_char_cnn_rnn_pickle(small_pipe, runner, tmp_path):
    embeddings = np.random.default_rng(0).standard_normal((4, 2, 1024)).astype(np.float32)
    pickle_path = _char_cnn_rnn_layout(tmp_path / "data", embeddings)
    out = tmp_path / "samples"
    args = ["sample", "--model", str(small_pipe), "--embeddings", str(pickle_path), "--index", "1..2,0",
            "--caption", "1", "--seed", "4", "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert [p.name for p in paths] == [f"bird-{i}-has-a-red-crown_seed4_000_128px.png" for i in (1, 2, 0)]
    expected = Text2ImagePipeline.from_pretrained(small_pipe)(embeddings=embeddings[[1, 2, 0], 1], seed=4).images
    for path, image in zip(paths, expected, strict=True):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))
    for bad, message in ((["--index", "4"], "outside 0..3"), (["--caption", "2"], "caption must be between 0 and 1"),
                         (["--index", "x"], "not a number"), (["a prompt"], "not both")):
        result = runner.invoke(app, [*args, *bad])
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_imported_pipeline_exports_and_keeps_its_source(small_pipe, runner, tmp_path):
    result = runner.invoke(app, ["export", str(small_pipe), str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    exported = Text2ImagePipeline.from_pretrained(tmp_path / "exported")
    assert exported.source == Text2ImagePipeline.from_pretrained(small_pipe).source
    assert exported.source["file"] == "netG_small.pth" and exported.text_encoder is None
    assert not (tmp_path / "exported" / "text_encoder").exists()


def test_eval_conditions_an_imported_model_on_the_test_sets_char_cnn_rnn_embeddings(small_pipe, tmp_path, runner,
                                                                                     monkeypatch):
    from test_data_cub import make_layout
    from torchvision import models

    from stackgan2.data.cub import read_char_cnn_rnn
    from stackgan2.metrics.evaluate import generate_final_images, sample_plan

    layout = make_layout(tmp_path / "data")
    table = read_char_cnn_rnn(layout / "test" / "char-CNN-RNN-embeddings.pickle")
    pipe = Text2ImagePipeline.from_pretrained(small_pipe)
    images, captions = sample_plan([table.shape[1]] * len(table), 5)
    batch, _ = generate_final_images(pipe, ["unused"] * 5, range(5), embeddings=table[images, captions])
    alone = np.asarray(pipe(embeddings=table[images[3], captions[3]], seed=3).images[0])
    assert np.abs(batch[3].astype(int) - alone).max() <= 1  # batch 5 vs 1: float32 rounding, at most one level

    monkeypatch.setattr("stackgan2.metrics.inception.INCEPTION_SIZE", 75)  # the smallest input it takes
    monkeypatch.setattr("stackgan2.metrics.evaluate.fid_from_features", lambda generated, real, names: 1.0)
    net = models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    weights = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    args = ["eval", "--model", str(small_pipe), "--data-dir", str(layout), "--cache-dir", str(tmp_path / "cache"),
            "--inception-weights", str(weights), "--metrics", "fid", "--num-samples", "5", "--device", "cpu",
            "--out", str(tmp_path / "m.json")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (layout / "test" / "char-CNN-RNN-embeddings.pickle").unlink()
    assert "char-CNN-RNN-embeddings.pickle" in _one_error_line(runner.invoke(app, args), code=2)


def test_init_from_an_imported_model_brings_no_text_encoder(small_pipe):
    """``train --init-from`` then pretrains one in phase 0 instead of looking for ``text_encoder/``."""
    from stackgan2.training.trainer import load_initial_weights

    initial = load_initial_weights(small_pipe)
    pipe = Text2ImagePipeline.from_pretrained(small_pipe)
    assert initial.text_encoder is None and initial.config == pipe.config
    assert all(torch.equal(initial.states["G"][k], v) for k, v in pipe.generator.state_dict().items())


def test_serve_refuses_a_model_without_text_encoder_in_one_line(small_pipe, runner):
    pytest.importorskip("uvicorn")
    result = runner.invoke(app, ["serve", "--model", str(small_pipe), "--port", "0", "--device", "cpu"])
    assert "has no text encoder" in _one_error_line(result)


def test_a_preset_of_another_family_is_a_usage_error(small, tmp_path, runner):
    _, weights, _ = small
    result = runner.invoke(app, ["import", str(weights), "--from", "stackgan-v2", "--preset", "v1-coco",
                                 "--out", str(tmp_path / "out")])
    assert "needs a stackgan2 preset such as 'birds'" in _one_error_line(result, code=2)
