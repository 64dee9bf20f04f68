"""DAMSM matching losses (AttnGAN, Xu et al., CVPR 2018, eqs. 7-13; code: taoxugit/AttnGAN losses.py).

Pure functions of tensors. Every score matrix is laid out ``scores[image, caption]`` with the
matching pairs on the diagonal; both retrieval directions (image -> caption and caption -> image) are
a cross-entropy over one axis, summed as in AttnGAN. Pairs of *different* batch items that share a
class are masked out of the negatives: another caption of the same class may well describe the image,
so it must not be pushed away (AttnGAN does the same with its ``class_ids`` masks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def same_class_negatives(class_ids: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: True where items i != j share a class (excluded from the negatives)."""
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(len(class_ids), dtype=torch.bool, device=class_ids.device)


def _matching_loss(scores: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the diagonal over each row and each column of ``scores[image, caption]``."""
    scores = scores.masked_fill(same_class_negatives(class_ids), float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    return F.cross_entropy(scores, labels) + F.cross_entropy(scores.t(), labels)


def sentence_scores(image_global: torch.Tensor, sentence: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity (B_images, B_captions) of global image features and sentence embeddings."""
    norms = image_global.norm(dim=1, keepdim=True) * sentence.norm(dim=1, keepdim=True).t()
    return image_global @ sentence.t() / norms.clamp(min=eps)


def sentence_loss(
    image_global: torch.Tensor, sentence: torch.Tensor, class_ids: torch.Tensor, gamma3: float = 10.0
) -> torch.Tensor:
    """AttnGAN ``sent_loss``: softmax over gamma3-scaled cosine similarities, both directions (eq. 11-13)."""
    B, D = image_global.shape
    assert sentence.shape == (B, D) and class_ids.shape == (B,)
    return _matching_loss(gamma3 * sentence_scores(image_global, sentence), class_ids)


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
    valid = torch.arange(T, device=words.device)[None, :] < lengths[:, None]  # (B_cap, T)
    dots = torch.einsum("cdt,idr->citr", words, v)                          # (B_cap, B_img, T, R)
    masked = dots.masked_fill(~valid[:, None, :, None], float("-inf"))
    attn = torch.softmax(gamma1 * torch.softmax(masked, dim=2), dim=3)      # over words, then regions
    context_dot_word = (attn * dots).sum(dim=3)                             # (B_cap, B_img, T)
    gram = torch.einsum("idr,ids->irs", v, v)                               # (B_img, R, R)
    context_sq = (torch.einsum("citr,irs->cits", attn, gram) * attn).sum(dim=3)
    word_norm = words.norm(dim=1)[:, None, :]                               # (B_cap, 1, T)
    cos = context_dot_word / (context_sq.clamp(min=1e-16).sqrt() * word_norm).clamp(min=1e-8)
    cos = cos.masked_fill(~valid[:, None, :], float("-inf"))
    return torch.logsumexp(gamma2 * cos, dim=2).t()


def word_loss(
    regions: torch.Tensor,
    words: torch.Tensor,
    lengths: torch.Tensor,
    class_ids: torch.Tensor,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> torch.Tensor:
    """AttnGAN ``words_loss``: the word-level relevance scaled by gamma3, both directions."""
    assert regions.shape[0] == words.shape[0] == class_ids.shape[0]
    return _matching_loss(gamma3 * word_region_scores(regions, words, lengths, gamma1, gamma2), class_ids)


def regression_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine distance + mean squared error, for regressing char-CNN-RNN embeddings from text."""
    assert predicted.shape == target.shape
    return (1 - F.cosine_similarity(predicted, target, dim=1)).mean() + F.mse_loss(predicted, target)
