"""PromptEncoder: prompt edge cases and the saved directory (round trip, tampering, mismatches)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from stackgan2.config import TextConfig
from stackgan2.errors import CheckpointError, PromptError, UsageError
from stackgan2.text import ImageEncoder, PromptEncoder, RegressionHead, TextEncoder, Vocabulary

TEXT = TextConfig(dim=8, word_dim=6, image_size=16, image_width=4)
CAPTIONS = ["a small red bird with black wings", "a large blue bird with a short yellow beak"]


def make_encoder(head_dim: int | None = None, with_image: bool = True) -> PromptEncoder:
    torch.manual_seed(0)
    vocab = Vocabulary.build(CAPTIONS)
    head = RegressionHead(TEXT.dim, head_dim) if head_dim else None
    image = ImageEncoder(TEXT.dim, TEXT.image_width) if with_image else None
    return PromptEncoder(vocab, TextEncoder(len(vocab), TEXT.word_dim, TEXT.dim), TEXT, head, image, {"r_precision": 0.5})


def test_encode_returns_embeddings_and_reports_unknown_words() -> None:
    encoder = make_encoder()
    out = encoder.encode(["a small red bird", "a purple bird 🐦 with wings"])
    assert out.embeddings.shape == (2, encoder.dim) and out.embeddings.dtype == torch.float32
    assert out.unknown == [[], ["purple", "🐦"]] and out.truncated == [False, False]
    assert encoder.encode("a small red bird").embeddings.shape == (1, 8)  # one string = one prompt
    # deterministic (eval mode: no dropout)
    assert torch.equal(encoder.encode(["a red bird"]).embeddings, encoder.encode(["a red bird"]).embeddings)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "contains no words"),
        ("   \n\t ", "contains no words"),
        ("?!... ,;", "contains no words"),
        ("🐦🐦 ✨", "no word the text encoder knows"),
        ("Ein kleiner Vogel über dem Baum", "no word the text encoder knows"),
    ],
)
def test_unusable_prompts_are_prompt_errors(prompt: str, message: str) -> None:
    with pytest.raises(PromptError, match=message) as info:
        make_encoder().encode(["a red bird", prompt])
    assert "\n" not in str(info.value)


def test_no_prompts_is_a_prompt_error() -> None:
    with pytest.raises(PromptError, match="no prompt"):
        make_encoder().encode([])


def test_prompt_error_shortens_the_prompt() -> None:
    with pytest.raises(PromptError) as info:
        make_encoder().encode(["zebra " * 2000])
    assert len(str(info.value)) < 300 and "…" in str(info.value)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("a small red bird " * 7000, "characters long; at most 10,000"), ("a small\x00red\x1b[2J bird", "control characters")],
)
def test_oversized_or_control_character_prompts_are_refused(prompt: str, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        make_encoder().encode([prompt])


def test_very_long_prompt_is_truncated_with_a_warning(caplog) -> None:
    prompt = ("a small red bird with black wings " * 300)[:10_000]
    with caplog.at_level(logging.WARNING, logger="stackgan2.text"):
        out = make_encoder().encode([prompt])
    assert out.truncated == [True] and out.embeddings.shape == (1, 8)
    assert any("only the first 18" in r.getMessage() for r in caplog.records)


def test_many_long_prompts_give_one_warning(caplog) -> None:
    """Evaluation encodes thousands of captions: over-long ones are counted in one line, not one each."""
    long = "a small red bird with black wings sitting on a branch in front of green leaves and a blue sky"
    with caplog.at_level(logging.WARNING, logger="stackgan2.text"):
        out = make_encoder().encode([long, "a small red bird", long + " today", long])
    assert out.truncated == [True, False, True, True]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("3 of 4 prompts have more than 18 words"), messages


@pytest.mark.parametrize("head_dim", [None, 24])
def test_save_load_round_trip(tmp_path, head_dim: int | None) -> None:
    encoder = make_encoder(head_dim)
    encoder.save(tmp_path / "enc")
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [
        "config.json", "image_encoder.safetensors", "text_encoder.safetensors", "vocab.json",
    ]  # fmt: skip
    loaded = PromptEncoder.load(tmp_path / "enc")
    assert loaded.dim == (head_dim or TEXT.dim) and loaded.config == TEXT and loaded.metrics == {"r_precision": 0.5}
    prompts = ["a small red bird", "a blue bird with a yellow beak"]
    assert torch.allclose(loaded.encode(prompts).embeddings, encoder.encode(prompts).embeddings)
    images = torch.zeros(2, 3, 16, 16)
    assert torch.allclose(loaded.image_encoder(images)[1], encoder.image_encoder(images)[1])


def test_save_replaces_a_previous_encoder_but_not_other_files(tmp_path) -> None:
    make_encoder(with_image=False).save(tmp_path / "enc")
    make_encoder(24).save(tmp_path / "enc")
    assert PromptEncoder.load(tmp_path / "enc").dim == 24
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    (tmp_path / "enc" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="notes.txt"):
        make_encoder().save(tmp_path / "enc")
    assert (tmp_path / "enc" / "notes.txt").read_text() == "mine"


def test_vocab_from_another_run_is_a_checkpoint_error(tmp_path) -> None:
    make_encoder().save(tmp_path / "enc")
    # same size, other words: only the fingerprint can tell
    other = Vocabulary.build(["a small red bird with black wings", "a large green bird with a short yellow beak"])
    assert len(other) == len(Vocabulary.build(CAPTIONS))
    other.save(tmp_path / "enc" / "vocab.json")
    with pytest.raises(CheckpointError, match="does not match the encoder weights"):
        PromptEncoder.load(tmp_path / "enc")
    Vocabulary.build(CAPTIONS + ["an owl"]).save(tmp_path / "enc" / "vocab.json")
    with pytest.raises(CheckpointError, match="does not match the encoder weights"):
        PromptEncoder.load(tmp_path / "enc")


def test_weights_that_do_not_fit_the_config_are_a_checkpoint_error(tmp_path) -> None:
    make_encoder().save(tmp_path / "enc")
    config_path = tmp_path / "enc" / "config.json"
    payload = json.loads(config_path.read_text())
    payload["text"]["dim"] = 16
    config_path.write_text(json.dumps(payload))
    with pytest.raises(CheckpointError, match="does not match"):
        PromptEncoder.load(tmp_path / "enc")


@pytest.mark.parametrize(
    "name, damage",
    [
        ("text_encoder.safetensors", lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
        ("text_encoder.safetensors", lambda p: p.unlink()),
        ("image_encoder.safetensors", lambda p: p.unlink()),
        ("image_encoder.safetensors", lambda p: p.write_bytes(b"\x00" * 16)),
        ("config.json", lambda p: p.write_text("{not json")),
        ("config.json", lambda p: p.write_text(json.dumps({"format": "stackgan2-text-encoder", "version": 1}))),
        ("config.json", lambda p: p.write_text(json.dumps({"format": "something-else"}))),
        ("vocab.json", lambda p: p.write_text("")),
    ],
)
def test_damaged_directory_is_a_checkpoint_error(tmp_path, name, damage) -> None:
    make_encoder().save(tmp_path / "enc")
    damage(tmp_path / "enc" / name)
    with pytest.raises(CheckpointError) as info:
        PromptEncoder.load(tmp_path / "enc")
    assert "\n" not in str(info.value)


def test_missing_directory_is_a_checkpoint_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        PromptEncoder.load(tmp_path / "nowhere")
