"""Hard negative captions for the DAMSM generator loss: a caption with one colour word swapped.

The DAMSM generator loss (AttnGAN) contrasts each generated image with the other captions of its
batch. At a small batch those almost always differ in the most visible attribute (a bird's body
colour), so the loss gives the generator next to no signal for a second colour word (the wings).
``swap_colour_words`` makes K captions from each caption by replacing one colour word with a colour
of another name: "a red bird with blue wings" -> "a red bird with green wings". Contrasting the image
with them (image -> caption, ``stackgan2.text.damsm.hard_negative_loss``) is a hard-negative
contrastive loss in the sense of VSE++ (Faghri et al., BMVC 2018); the colour-word swap is this
project's (``train.damsm_swap_negatives``).

The colour words are the 15 colour values of CUB-200-2011's part attributes (``attributes.txt``,
e.g. ``has_wing_color::rufous``), with "gray" and "violet" as synonyms of grey and purple (CUB and
toy-birds captions write both): a word is never swapped for a synonym, which would not be a negative.
Only words of the text encoder's vocabulary take part, so a swapped caption stays in-vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stackgan2.text.vocab import Vocabulary

# CUB-200-2011 attributes.txt colour values (order as there); synonyms share a group.
COLOUR_GROUPS: tuple[tuple[str, ...], ...] = (
    ("blue",), ("brown",), ("iridescent",), ("purple", "violet"), ("rufous",), ("grey", "gray"), ("yellow",),
    ("olive",), ("green",), ("pink",), ("orange",), ("black",), ("white",), ("red",), ("buff",),
)


@dataclass(frozen=True)
class ColourWords:
    """The colour words of one vocabulary: their ids and their synonym group."""

    ids: Tensor     # (C,) token ids
    groups: Tensor  # (C,) index into COLOUR_GROUPS; equal groups are synonyms

    @classmethod
    def of(cls, vocab: Vocabulary) -> ColourWords:
        """The colour words that ``vocab`` knows (the others could not be encoded)."""
        pairs = [(vocab.stoi[word], group) for group, words in enumerate(COLOUR_GROUPS) for word in words
                 if word in vocab.stoi]
        ids, groups = zip(*pairs, strict=True) if pairs else ((), ())
        return cls(torch.tensor(ids, dtype=torch.long), torch.tensor(groups, dtype=torch.long))


@dataclass(frozen=True)
class SwapNegatives:
    """DAMSM features of K swapped captions per caption of a batch of B."""

    words: Tensor     # (B, K, D, T)
    sentence: Tensor  # (B, K, D)
    lengths: Tensor   # (B, K)
    valid: Tensor     # (B, K) bool: False where the caption has no colour word (no negative)


def swap_colour_words(ids: Tensor, lengths: Tensor, colours: ColourWords, k: int,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """K copies of every caption, each with one colour word replaced by a colour of another group.

    ``ids`` (B, T) padded token ids (``pad_batch`` layout), ``lengths`` (B,). The position (uniform
    over the caption's colour words) and the new colour (uniform over the other groups' words) come
    from ``generator`` on the CPU; exactly 2 B K numbers are drawn whatever the captions, so the
    stream advances the same at every step. Returns the swapped ids (B, K, T) and ``valid`` (B, K):
    False for a caption without a colour word (its copies are unchanged and must be masked).
    """
    B, T = ids.shape
    u = torch.rand(2, B, k, generator=generator)
    ids, lengths = ids.cpu(), lengths.cpu()
    match = ids[:, :, None] == colours.ids[None, None, :]                             # (B, T, C)
    is_colour = match.any(dim=2) & (torch.arange(T)[None, :] < lengths[:, None])
    group_at = (match.long() * colours.groups).sum(dim=2)                             # (B, T)
    count = is_colour.sum(dim=1, keepdim=True)                                        # (B, 1)
    choice = (u[0] * count).long().clamp(max=(count - 1).clamp(min=0))                # (B, K)
    rank = is_colour.long().cumsum(dim=1) - 1
    at = is_colour[:, None, :] & (rank[:, None, :] == choice[:, :, None])            # (B, K, T) one-hot
    old_group = (at.long() * group_at[:, None, :]).sum(dim=2)                         # (B, K)
    others = colours.groups[None, None, :] != old_group[:, :, None]                   # (B, K, C)
    n_others = others.sum(dim=2)
    pick = (u[1] * n_others).long().clamp(max=(n_others - 1).clamp(min=0))
    chosen = others & (others.long().cumsum(dim=2) - 1 == pick[:, :, None])
    new_id = (chosen.long() * colours.ids).sum(dim=2)                                 # (B, K)
    valid = (count > 0) & (n_others > 0)
    swapped = torch.where(at & valid[:, :, None], new_id[:, :, None], ids[:, None, :])
    return swapped, valid
