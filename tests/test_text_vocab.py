"""Tokenizer and vocabulary: normalisation, determinism, unknown words, truncation, file format."""

from __future__ import annotations

import json

import pytest

from stackgan2.errors import CheckpointError
from stackgan2.text import Vocabulary, tokenize
from stackgan2.text.vocab import PAD_ID, UNK_ID

CAPTIONS = [
    "A small red bird with black wings.",
    "this bird is red, with a short beak",
    "A tiny blue bird; short yellow beak!",
]


def test_tokenize_lowercases_and_splits_on_punctuation() -> None:
    assert tokenize("A Small, RED-bird's beak...") == ["a", "small", "red", "bird", "s", "beak"]


def test_tokenize_keeps_symbols_and_normalises_fullwidth() -> None:
    assert tokenize("ａ red bird 🐦!") == ["a", "red", "bird", "🐦"]
    assert tokenize("  ?!... ,;  ") == []
    assert tokenize("") == []


def test_vocabulary_order_and_specials() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    assert vocab.itos[:2] == ["<pad>", "<unk>"] and (PAD_ID, UNK_ID) == (0, 1)
    # most frequent first, ties alphabetical
    assert vocab.itos[2:8] == ["a", "bird", "beak", "red", "short", "with"]
    assert len(vocab) == len(set(tokenize(" ".join(CAPTIONS)))) + 2


def test_min_count_sends_rare_words_to_unk() -> None:
    vocab = Vocabulary.build(CAPTIONS, min_count=2)
    encoded = vocab.encode("a tiny red bird", max_words=18)
    assert encoded.ids == [vocab.stoi["a"], UNK_ID, vocab.stoi["red"], vocab.stoi["bird"]]
    assert encoded.unknown == ["tiny"]


def test_encode_reports_unknown_words_once_in_order_and_truncation() -> None:
    vocab = Vocabulary.build(CAPTIONS)
    encoded = vocab.encode("zebra red zebra café bird", max_words=18)
    assert encoded.unknown == ["zebra", "café"] and not encoded.truncated
    long = vocab.encode("red " * 30, max_words=18)
    assert long.truncated and len(long.ids) == 18 and long.num_tokens == 30


def test_same_captions_give_byte_identical_vocab_json(tmp_path) -> None:
    Vocabulary.build(CAPTIONS).save(tmp_path / "a.json")
    Vocabulary.build(list(reversed(CAPTIONS))).save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert Vocabulary.load(tmp_path / "a.json") == Vocabulary.build(CAPTIONS)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        json.dumps({"format": "something-else", "words": ["<pad>", "<unk>"]}),
        json.dumps({"format": "stackgan2-vocab", "words": ["red", "<pad>", "<unk>"]}),
        json.dumps({"format": "stackgan2-vocab", "words": ["<pad>", "<unk>", "red", "red"]}),
        json.dumps({"format": "stackgan2-vocab", "words": ["<pad>", "<unk>", 3]}),
    ],
)
def test_bad_vocab_file_is_a_checkpoint_error(tmp_path, content: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match="vocab"):
        Vocabulary.load(path)


def test_missing_vocab_file_is_a_checkpoint_error(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Vocabulary.load(tmp_path / "vocab.json")


def test_attngan_convention_keeps_official_indices_and_leaves_unknown_words_out(tmp_path) -> None:
    import torch

    vocab = Vocabulary(["<end>", "bird", "red", "a"], convention="attngan")
    encoded = vocab.encode("A zebra-red bird with red", max_words=3)
    assert encoded.ids == [3, 2, 1] and encoded.tokens == ("a", "red", "bird")
    assert encoded.unknown == ["zebra", "with"] and encoded.truncated and encoded.num_tokens == 6
    assert vocab.words == ["bird", "red", "a"] and vocab.unk_id is None
    assert vocab.attention_mask(torch.tensor([[3, 1, 0]])).tolist() == [[False, False, True]]  # official: == 0
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["convention"] == "attngan"
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab != Vocabulary(["bird", "red", "a"])
    with pytest.raises(ValueError, match="starts with '<end>'"):
        Vocabulary(["bird", "<end>"], convention="attngan")
