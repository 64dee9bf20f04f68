"""torchvision's ImageNet Inception-v3, loaded from a weights file on disk: FID features and IS probabilities.

FID uses the 2048-d pool3 features (the global average pool before the classifier, Heusel et al.);
the Inception Score uses its 1000-way ImageNet softmax (Salimans et al.). Images in [-1, 1] are resized
to 299 x 299 bilinearly; torchvision's Inception weights were ported from TensorFlow and expect
exactly that range, so no further normalisation is applied (``transform_input=False``). These are
torchvision's weights, not the TensorFlow graph of TTUR / pytorch-fid, so absolute FID values are
comparable between runs of this tool, not digit for digit with published numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stackgan2.errors import CheckpointError

INCEPTION_SIZE = 299
INCEPTION_WEIGHTS_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
INCEPTION_WEIGHTS_HINT = (
    f"this machine cannot download them: on one with internet, download {INCEPTION_WEIGHTS_URL} "
    "(torchvision's Inception_V3_Weights.IMAGENET1K_V1; torchvision keeps it in ~/.cache/torch/hub/checkpoints) "
    "and pass its path with --inception-weights"
)


class InceptionV3(nn.Module):
    """Images (B, 3, S, S) in [-1, 1] -> ``{"features": (B, 2048) pool3, "class": (B, 1000) logits}``."""

    feature_dim = 2048

    def __init__(self, aux_logits: bool = True) -> None:
        super().__init__()
        from torchvision import models

        # aux_logits only decides whether the state dict has AuxLogits.* keys; eval mode never uses them.
        self.net = models.inception_v3(weights=None, aux_logits=aux_logits, init_weights=False, transform_input=False)
        self.fc = self.net.fc
        self.net.fc = nn.Identity()  # the network's output becomes the pooled (and, in eval, undropped) features

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        assert images.ndim == 4 and images.shape[1] == 3, f"images must be (B, 3, S, S), got {tuple(images.shape)}"
        if images.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            images = F.interpolate(images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        features = self.net(images)
        assert features.shape == (images.shape[0], self.feature_dim)
        return {"features": features, "class": self.fc(features)}


def load_inception(path: Path, device: torch.device | str = "cpu") -> InceptionV3:
    """Inception-v3 in eval mode from a torchvision state dict (``.pth`` read with ``weights_only`` or ``.safetensors``)."""
    from stackgan2.text.encoders import load_backbone_weights

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Inception-v3 weights not found: {path}; {INCEPTION_WEIGHTS_HINT}")
    state = load_backbone_weights(path)
    model = InceptionV3(aux_logits=any(k.startswith("AuxLogits.") for k in state))
    try:
        model.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
        model.fc.load_state_dict({k.removeprefix("fc."): v for k, v in state.items() if k.startswith("fc.")})
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CheckpointError(f"{path} does not hold torchvision inception_v3 weights: {first}") from None
    return model.to(device).eval()
