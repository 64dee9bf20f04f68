"""The pretrained toy-birds pipeline in assets/toy-birds: loads offline and draws the prompted colours.

Judged by the shipped toy-birds attribute classifier (99.8 % body colour on real test images) on
"a {body} bird with {wing} wings" prompts, ten seeds each, at the final (256 px) branch. The
threshold is 2.5x chance and below what the shipped snapshot measured (assets/README.md), so an
untrained, broken or wrongly loaded model fails it (raise it as better snapshots are shipped).
"""

import pytest
import torch

from stackgan2.metrics.classifier import load_classifier
from stackgan2.pipeline import Text2ImagePipeline, _as_tensor, shipped_classifier_dir, shipped_model_dir

MODEL = shipped_model_dir()
pytestmark = pytest.mark.skipif(MODEL is None, reason="no pretrained toy-birds model in assets/toy-birds")

COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white", "grey"]
# Every body colour once, each with a wing colour three places further on, so no pair repeats.
PROMPTS = [(body, COLOURS[(i + 3) % len(COLOURS)]) for i, body in enumerate(COLOURS)]
IMAGES = 10
BODY_THRESHOLD = 0.25  # chance 0.10; the shipped snapshot (28,406 iterations) measured 0.34 (wing 0.18)


@pytest.fixture(scope="module")
def judged():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    pipe = Text2ImagePipeline.from_pretrained(MODEL, device="cpu")
    classifier, payload = load_classifier(shipped_classifier_dir())
    out = pipe([f"a {body} bird with {wing} wings" for body, wing in PROMPTS], num_images_per_prompt=IMAGES, seed=0)
    with torch.no_grad():
        scores = classifier(_as_tensor(out.images))
    colours = payload["spec"].attributes["body_color"]
    body = [colours[i] for i in scores["body_color"].argmax(dim=1).tolist()]
    return pipe, out, body


def test_shipped_model_is_the_toy_three_stage_model(judged):
    pipe, out, _ = judged
    assert pipe.config.model.resolutions == [64, 128, 256]
    assert [im.size for im in (out.branches[0][0], out.branches[1][0], out.branches[2][0])] == [(64, 64), (128, 128), (256, 256)]
    assert out.unknown == [[] for _ in PROMPTS]


def test_shipped_model_draws_the_prompted_body_colour(judged):
    _, out, body = judged
    wanted = [b for b, _ in PROMPTS for _ in range(IMAGES)]
    accuracy = sum(p == w for p, w in zip(body, wanted, strict=True)) / len(wanted)
    assert accuracy >= BODY_THRESHOLD, f"body colour accuracy {accuracy:.2f} (predicted {body})"
