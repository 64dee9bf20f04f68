"""DAMSM matching losses (AttnGAN, Xu et al., CVPR 2018, eqs. 7-13; code: taoxugit/AttnGAN losses.py).

Pure functions of tensors. Every score matrix is laid out ``scores[image, caption]`` with the
matching pairs on the diagonal; both retrieval directions (image -> caption and caption -> image) are
a cross-entropy over one axis, summed as in AttnGAN. Pairs of *different* batch items that share a
class are masked out of the negatives: another caption of the same class may well describe the image,
so it must not be pushed away (AttnGAN does the same with its ``class_ids`` masks).

Optionally, extra images join the caption -> image direction as ``negatives`` (generated images, for the
trained DAMSM image encoder of ``train.damsm_fake_negatives``): each caption must then pick its image among
the batch's images *and* the negatives, the negative drawn for that very caption included. A negative is
never the right answer for any caption, so none of them is masked; the image -> caption direction is the
batch's alone (a negative has no caption to pick).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def same_class_negatives(class_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: True where items i != j share a class (excluded from the negatives)."""
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(len(class_ids), dtype=torch.bool, device=class_ids.device)


def _matching_loss(scores: torch.Tensor, class_ids: torch.Tensor,
                   negative_scores: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the diagonal over each row and each column of ``scores[image, caption]``;
    ``negative_scores[negative, caption]`` (N, B), when given, extend every column (caption -> image)."""
    scores = scores.masked_fill(same_class_negatives(class_ids), float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    columns = scores
    if negative_scores is not None:
        assert negative_scores.shape[1] == scores.shape[1], "one score per caption for every negative"
        columns = torch.cat([scores, negative_scores])
    return F.cross_entropy(scores, labels) + F.cross_entropy(columns.t(), labels)


def sentence_scores(image_global: torch.Tensor, sentence: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity (B_images, B_captions) of global image features and sentence embeddings."""
    norms = image_global.norm(dim=1, keepdim=True) * sentence.norm(dim=1, keepdim=True).t()
    return image_global @ sentence.t() / norms.clamp(min=eps)


def sentence_loss(
    image_global: torch.Tensor, sentence: torch.Tensor, class_ids: torch.Tensor, gamma3: float = 10.0,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """AttnGAN ``sent_loss``: softmax over gamma3-scaled cosine similarities, both directions (eq. 11-13).
    ``negatives`` (N, D): global features of extra images every caption must rank below its own."""
    B, D = image_global.shape
    assert sentence.shape == (B, D) and class_ids.shape == (B,)
    assert negatives is None or negatives.shape[1] == D
    negative_scores = None if negatives is None else gamma3 * sentence_scores(negatives, sentence)
    return _matching_loss(gamma3 * sentence_scores(image_global, sentence), class_ids, negative_scores)


def _attend(dots: torch.Tensor, valid: torch.Tensor, gamma1: float) -> torch.Tensor:
    """AttnGAN ``func_attention``'s two softmaxes (eqs. 8-9) on word-region dot products (..., T, R): over the
    valid words of each region, then, sharpened by gamma1, over the regions of each word. ``valid`` broadcasts
    to ``dots`` (True at the words of the caption)."""
    masked = dots.masked_fill(~valid, float("-inf"))
    return torch.softmax(gamma1 * torch.softmax(masked, dim=-2), dim=-1)


def _relevance(cos: torch.Tensor, valid: torch.Tensor, gamma2: float) -> torch.Tensor:
    """R(Q, D) = log sum over the valid words of exp(gamma2 * cos(word, its region context)) (eq. 10)."""
    return torch.logsumexp(gamma2 * cos.masked_fill(~valid, float("-inf")), dim=-1)


def _valid_words(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) bool: True at the first ``lengths[b]`` words of each caption."""
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def word_region_scores(
    regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, gamma1: float = 4.0, gamma2: float = 5.0
) -> torch.Tensor:
    """Word-level image-text relevance R(Q, D) for every (image, caption) pair, shape (B_images, B_captions).

    AttnGAN eqs. 7-10 / ``func_attention`` + ``words_loss``: word-region dot products are normalised
    over the words of a caption (softmax), each word attends over the regions with sharpness gamma1,
    and the cosine similarities of words and their region contexts are pooled with
    log(sum exp(gamma2 * cos)). Padding words take no part.

    The region contexts c = V a (B x B x T x D) are never built: c . e = a . (V^T e) reuses the
    word-region dot products and |c|^2 = a^T (V^T V) a needs only the R x R Gram matrix of each image,
    which makes the loss several times cheaper than AttnGAN's loop over captions.
    """
    B_img, D = regions.shape[:2]
    B_cap, _, T = words.shape
    assert words.shape[1] == D and lengths.shape == (B_cap,)
    v = regions.flatten(2)                                                  # (B_img, D, R)
    valid = _valid_words(lengths.to(words.device), T)                       # (B_cap, T)
    dots = torch.einsum("cdt,idr->citr", words, v)                          # (B_cap, B_img, T, R)
    attn = _attend(dots, valid[:, None, :, None], gamma1)
    context_dot_word = (attn * dots).sum(dim=3)                             # (B_cap, B_img, T)
    gram = torch.einsum("idr,ids->irs", v, v)                               # (B_img, R, R)
    context_sq = (torch.einsum("citr,irs->cits", attn, gram) * attn).sum(dim=3)
    word_norm = words.norm(dim=1)[:, None, :]                               # (B_cap, 1, T)
    cos = context_dot_word / (context_sq.clamp(min=1e-16).sqrt() * word_norm).clamp(min=1e-8)
    return _relevance(cos, valid[:, None, :], gamma2).t()


def matched_word_region_scores(
    regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor, gamma1: float = 4.0, gamma2: float = 5.0
) -> torch.Tensor:
    """R(Q_b, D_b) of each image with its own caption, shape (B,): the diagonal of ``word_region_scores``
    at a B-th of its cost (the contexts of B pairs are cheap to build).

    This is the correlation of ControlGAN's word-level discriminator (Li et al. NeurIPS 2019; mrlibw/ControlGAN
    ``code/miscc/losses.py`` ``word_level_correlation``): ``func_attention`` of each caption's first
    ``cap_lens[i]`` words over its own image's regions, then log(sum exp(gamma2 * cos(word, context))).
    Its word-level self-attention (``res_softmax``, a softmax over the words of ``mean(words) . word``)
    multiplies each word's context by a positive weight before the cosine, which leaves the cosine, and so the
    score, unchanged; it is left out. ``regions`` (B, D, h, w), ``words`` (B, D, T), ``lengths`` (B,).
    """
    B, D = regions.shape[:2]
    assert words.shape[:2] == (B, D) and lengths.shape == (B,)
    v = regions.flatten(2)                                                  # (B, D, R)
    valid = _valid_words(lengths.to(words.device), words.shape[2])         # (B, T)
    attn = _attend(torch.einsum("bdt,bdr->btr", words, v), valid[:, :, None], gamma1)
    context = torch.einsum("btr,bdr->bdt", attn, v)                         # (B, D, T)
    cos = (words * context).sum(dim=1) / (words.norm(dim=1) * context.norm(dim=1)).clamp(min=1e-8)
    return _relevance(cos, valid, gamma2)


def word_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    lengths: torch.Tensor,
    class_ids: torch.Tensor,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """AttnGAN ``words_loss``: the word-level relevance scaled by gamma3, both directions. ``negatives``
    (N, D, h, w): region features of extra images every caption must rank below its own (their word-region
    relevance joins each caption's softmax over the images)."""
    assert regions.shape[0] == words.shape[0] == class_ids.shape[0]
    if negatives is None:
        return _matching_loss(gamma3 * word_region_scores(regions, words, lengths, gamma1, gamma2), class_ids)
    assert negatives.shape[1:] == regions.shape[1:]
    scores = gamma3 * word_region_scores(torch.cat([regions, negatives]), words, lengths, gamma1, gamma2)
    return _matching_loss(scores[: regions.shape[0]], class_ids, scores[regions.shape[0]:])


def regression_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine distance + mean squared error, for regressing char-CNN-RNN embeddings from text."""
    assert predicted.shape == target.shape
    return (1 - F.cosine_similarity(predicted, target, dim=1)).mean() + F.mse_loss(predicted, target)
