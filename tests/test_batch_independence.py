"""An image is the same bytes alone and beside any other rows: on the CPU every generator forward
computes one row (stackgan2.pipeline, "Batch independence"). Checked on the shipped model, which is wide
enough for MKL and oneDNN to round by row count (the tiny test model is not); forwards of 16 rows, as a
full ``serve`` batch was, round unlike lone ones in most images."""

from __future__ import annotations

import pytest

from stackgan2.cli.main import app as cli_app
from stackgan2.imaging import png_bytes
from stackgan2.pipeline import Text2ImagePipeline, shipped_model_dir
from stackgan2.serving import BatchingGenerator, ImageRequest

SHIPPED = shipped_model_dir()
pytestmark = pytest.mark.skipif(SHIPPED is None, reason="no pretrained toy-birds model in assets/toy-birds")
ALL_BRANCHES = (0, 1, 2)
MIXED = [  # 16 images of three prompts, one of them twice: one full pass of a max_batch 16 server
    ImageRequest("a small red bird with black wings", 1, 5, ALL_BRANCHES),
    ImageRequest("a large blue bird with a short yellow beak", 7, 11, ALL_BRANCHES),
    ImageRequest("a yellow bird with grey wings", 5, 999, ALL_BRANCHES),
    ImageRequest("a small red bird with black wings", 3, 40, ALL_BRANCHES),
]


@pytest.fixture(scope="module")
def shipped() -> Text2ImagePipeline:
    return Text2ImagePipeline.from_pretrained(SHIPPED, device="cpu")


def test_a_lone_image_equals_the_same_seed_inside_a_mixed_serve_batch(shipped, runner, tmp_path):
    batcher = BatchingGenerator(shipped, max_batch=16, gather_ms=2000)
    try:
        futures = [batcher.submit(request) for request in MIXED]
        results = [future.result(120) for future in futures]
    finally:
        batcher.close()
    assert list(batcher.batch_sizes) == [16]  # the four requests shared one pass
    for request, result in zip(MIXED, results, strict=True):
        together = shipped(request.prompt, num_images_per_prompt=request.n, seed=request.seed)
        for k in range(request.n):
            lone = shipped(request.prompt, seed=request.seed + k)
            served = [png_bytes(image) for image in result.images[k]]
            assert served == [png_bytes(branch[0]) for branch in lone.branches], (request, k)
            assert served == [png_bytes(branch[k]) for branch in together.branches], (request, k)
    request, k = MIXED[1], 3  # the CLI writes the same file
    out = tmp_path / "samples"
    result = runner.invoke(cli_app, ["sample", request.prompt, "--seed", str(request.seed + k), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (written,) = out.glob("*.png")
    assert written.read_bytes() == png_bytes(results[1].images[k][-1])
