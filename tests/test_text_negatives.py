"""Colour-swapped hard negative captions (``train.damsm_swap_negatives``): the swap and its DAMSM term."""

from __future__ import annotations

import math

import pytest
import torch

from stackgan2.losses import damsm_loss
from stackgan2.text import Vocabulary
from stackgan2.text.damsm import hard_negative_loss, sentence_loss, word_loss, word_region_scores
from stackgan2.text.negatives import COLOUR_GROUPS, ColourWords, SwapNegatives, swap_colour_words
from stackgan2.text.prompt import pad_batch

CAPTIONS = ["a red bird with blue wings and a black beak", "a bird on a branch", "this grey bird has gray wings",
            "a small violet bird"]


def _group(word: str) -> int:
    return next(g for g, words in enumerate(COLOUR_GROUPS) if word in words)


def test_swap_changes_exactly_one_colour_word_to_another_colour_in_the_vocabulary() -> None:
    # "pink" is a colour the vocabulary does not know: it must never be produced
    vocab = Vocabulary.build(CAPTIONS + ["green orange yellow brown white purple"])
    colours = ColourWords.of(vocab)
    assert "pink" not in vocab.stoi and len(colours.ids) == 12
    ids, lengths = pad_batch([vocab.encode(c, 18).ids for c in CAPTIONS], "cpu")
    generator = torch.Generator().manual_seed(0)
    swapped, valid = swap_colour_words(ids, lengths, colours, 6, generator)
    assert swapped.shape == (4, 6, ids.shape[1]) and valid.tolist() == [[True] * 6, [False] * 6, [True] * 6, [True] * 6]
    colour_words = {vocab.itos[i] for i in colours.ids.tolist()}
    for b in range(4):
        for k in range(6):
            changed = (swapped[b, k] != ids[b]).nonzero().flatten().tolist()
            if not valid[b, k]:
                assert changed == []
                continue
            assert len(changed) == 1 and changed[0] < lengths[b]
            old, new = vocab.itos[ids[b, changed[0]]], vocab.itos[swapped[b, k, changed[0]]]
            assert old in colour_words and new in colour_words and _group(old) != _group(new)  # never grey -> gray
    # 2 B K numbers per call whatever the captions: the stream is a function of the step count only
    reference = torch.Generator().manual_seed(0)
    torch.rand(2, 4, 6, generator=reference)
    assert torch.equal(generator.get_state(), reference.get_state())


def test_hard_negative_loss_matches_hand_computation() -> None:
    scores = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    extra = torch.tensor([[7.0, 3.0], [9.0, 9.0]])
    valid = torch.tensor([[True, False], [False, False]])
    # row 0: logits (10, 0, 7); row 1: (0, 10), its negatives masked
    row0 = -10 + math.log(math.exp(10) + 1 + math.exp(7))
    row1 = -10 + math.log(1 + math.exp(10))
    loss = hard_negative_loss(scores, torch.tensor([0, 1]), extra, valid)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)
    # a same-class caption of the batch is no negative (row 0's column 1 leaves), the swapped ones still are
    same = hard_negative_loss(scores, torch.tensor([5, 5]), extra, valid)
    assert same.item() == pytest.approx((-10 + math.log(math.exp(10) + math.exp(7))) / 2, rel=1e-5)


def test_damsm_swap_term_on_a_tiny_batch() -> None:
    g = torch.Generator().manual_seed(1)
    B, K, D, T = 3, 2, 4, 5
    regions, image_global = torch.randn(B, D, 2, 2, generator=g), torch.eye(3, D)
    words, lengths = torch.randn(B, D, T, generator=g), torch.tensor([5, 3, 2])
    sentence = torch.eye(3, D)
    # image 0's negatives: (1, 1, 0, 0) / sqrt 2 and -e0; image 1 has one; image 2 none
    neg_sentence = torch.tensor([[[1.0, 1, 0, 0], [-1, 0, 0, 0]], [[0, 0, 0, 1], [0, 0, 0, 1]], [[1, 0, 0, 0]] * 2])
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    neg_words, neg_lengths = torch.randn(B, K, D, T, generator=g), torch.tensor([[4, 4], [3, 3], [2, 2]])
    negatives = SwapNegatives(neg_words, neg_sentence, neg_lengths, valid)
    class_ids = torch.tensor([0, 1, 2])
    total, terms = damsm_loss(regions, image_global, words, sentence, lengths, class_ids, negatives=negatives)
    plain, plain_terms = damsm_loss(regions, image_global, words, sentence, lengths, class_ids)
    # K = 0 is AttnGAN's loss, bit for bit
    assert "swap" not in plain_terms
    assert torch.equal(plain, word_loss(regions, words, lengths, class_ids) + sentence_loss(image_global, sentence, class_ids))
    assert torch.equal(terms["word"], plain_terms["word"]) and torch.equal(terms["sentence"], plain_terms["sentence"])
    # sentence part by hand: cosines gamma3 * (1, 0, 0 | 1/sqrt 2, -1), (0, 1, 0 | 0), (0, 0, 1)
    e, r = math.exp(10), math.exp(10 / math.sqrt(2))
    sentence_swap = (math.log(e + 2 + r + math.exp(-10)) - 10 + math.log(e + 2 + 1) - 10 + math.log(e + 2) - 10) / 3
    word_scores = 10 * word_region_scores(regions, words, lengths)
    word_negatives = torch.stack([10 * word_region_scores(regions[i : i + 1], neg_words[i], neg_lengths[i])[0]
                                  for i in range(B)])
    logits = torch.cat([word_scores, word_negatives.masked_fill(~valid, -math.inf)], dim=1)
    word_swap = sum(torch.logsumexp(logits[i], 0) - logits[i, i] for i in range(B)) / B
    assert terms["swap"].item() == pytest.approx(sentence_swap + word_swap.item(), rel=1e-5)
    assert total.item() == pytest.approx((plain + terms["swap"]).item(), rel=1e-6)
