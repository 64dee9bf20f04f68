"""The pretrained toy-birds pipeline in assets/toy-birds: loads offline and draws the prompted colours.

Judged by the shipped toy-birds attribute classifier (99.8 % body colour on real test images) on
"a {body} bird with {wing} wings" prompts, ten seeds each, at the final (256 px) branch. The
thresholds sit just under what the shipped model measures (assets/README.md), so a regression of the
recipe or a broken or wrongly loaded model fails them (raise them as better models are shipped).
"""

import pytest
import torch

from stackgan2.metrics.classifier import load_classifier
from stackgan2.metrics.diversity import mean_pairwise_distance
from stackgan2.pipeline import Text2ImagePipeline, _as_tensor, shipped_classifier_dir, shipped_model_dir

MODEL = shipped_model_dir()
pytestmark = pytest.mark.skipif(MODEL is None, reason="no pretrained toy-birds model in assets/toy-birds")

COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white", "grey"]
# Every body colour once, each with a wing colour three places further on, so no pair repeats.
PROMPTS = [(body, COLOURS[(i + 3) % len(COLOURS)]) for i, body in enumerate(COLOURS)]
IMAGES = 10
# Chance 0.10. The shipped model (issue 31: the official-loss model fine-tuned with the colour recipe, mode
# seeking and --damsm-fake-negatives) measures body 0.78, wing 0.34 here; issue 18's model measured 0.83 /
# 0.37, the one before it (28,406 iterations of the official losses) 0.34 / 0.18.
BODY_THRESHOLD = 0.76
WING_THRESHOLD = 0.32
# Spread between the ten seeds of a prompt: mean pairwise L2 distance of the classifier's (FID) features,
# averaged over the prompts. The shipped model measures 20.3; issue 18's model 15.8 (its seeds drew nearly one
# picture); real toy-birds test images of one colour class about 25.5.
SPREAD_THRESHOLD = 19.0


@pytest.fixture(scope="module")
def judged():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    pipe = Text2ImagePipeline.from_pretrained(MODEL, device="cpu")
    classifier, payload = load_classifier(shipped_classifier_dir())
    out = pipe([f"a {body} bird with {wing} wings" for body, wing in PROMPTS], num_images_per_prompt=IMAGES, seed=0)
    with torch.no_grad():
        scores = classifier(_as_tensor(out.images))
    attributes = payload["spec"].attributes
    body, wing = ([attributes[key][i] for i in scores[key].argmax(dim=1).tolist()] for key in ("body_color", "wing_color"))
    return pipe, out, body, wing, scores["features"].double().numpy()


def test_shipped_model_is_the_toy_three_stage_model(judged):
    pipe, out, _, _, _ = judged
    assert pipe.config.model.resolutions == [64, 128, 256]
    assert [im.size for im in (out.branches[0][0], out.branches[1][0], out.branches[2][0])] == [(64, 64), (128, 128), (256, 256)]
    assert out.unknown == [[] for _ in PROMPTS]


def test_shipped_model_draws_the_prompted_body_colour(judged):
    _, out, body, _, _ = judged
    wanted = [b for b, _ in PROMPTS for _ in range(IMAGES)]
    accuracy = sum(p == w for p, w in zip(body, wanted, strict=True)) / len(wanted)
    assert accuracy >= BODY_THRESHOLD, f"body colour accuracy {accuracy:.2f} (predicted {body})"


def test_shipped_model_draws_the_prompted_wing_colour(judged):
    _, out, _, wing, _ = judged
    wanted = [w for _, w in PROMPTS for _ in range(IMAGES)]
    accuracy = sum(p == w for p, w in zip(wing, wanted, strict=True)) / len(wanted)
    assert accuracy >= WING_THRESHOLD, f"wing colour accuracy {accuracy:.2f} (predicted {wing})"


def test_shipped_model_draws_different_birds_for_different_seeds(judged):
    *_, features = judged
    spread = mean_pairwise_distance(features, IMAGES)
    assert spread >= SPREAD_THRESHOLD, f"spread between seeds {spread:.1f}"
