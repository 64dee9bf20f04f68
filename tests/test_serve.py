"""``stackgan2 serve``: a real uvicorn server on 127.0.0.1 (a thread, or the CLI as a subprocess), the
tiny test model for the API's limits and the shipped model where pixels must match across paths; the
page is driven in headless Chromium (Debian's ``chromium`` + ``chromium-driver``)."""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import cli_server, make_tiny_pipeline

from stackgan2.cli.main import app as cli_app
from stackgan2.imaging import png_bytes
from stackgan2.models import build_generator
from stackgan2.pipeline import Text2ImagePipeline, shipped_model_dir
from stackgan2.serving import (
    MAX_BODY_BYTES,
    BatchingGenerator,
    ImageRequest,
    RequestError,
    image_request_schema,
    model_info,
    parse_image_request,
)

SHIPPED = shipped_model_dir()
needs_shipped = pytest.mark.skipif(SHIPPED is None, reason="no pretrained toy-birds model in assets/toy-birds")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@contextlib.contextmanager
def serving(pipe: Text2ImagePipeline, name: str, max_batch: int = 16, gather_ms: float = 5.0) -> Iterator[tuple[str, BatchingGenerator]]:
    """The app of ``stackgan2 serve`` under uvicorn in a thread, on a free port; yields (base URL, batcher)."""
    import uvicorn

    from stackgan2.cli.serve import bind
    from stackgan2.cli.serve_app import create_app

    batcher = BatchingGenerator(pipe, max_batch, gather_ms)
    app = create_app(batcher, model_info(pipe, name, False, max_batch))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", batcher
    finally:
        server.should_exit = True
        thread.join(10)
        batcher.close()
        sock.close()


@pytest.fixture(scope="module")
def tiny() -> Text2ImagePipeline:
    return make_tiny_pipeline()


@pytest.fixture(scope="module")
def tiny_server(tiny):
    with serving(tiny, "tiny") as running:
        yield running


@pytest.fixture(scope="module")
def shipped() -> Text2ImagePipeline:
    return Text2ImagePipeline.from_pretrained(SHIPPED, device="cpu")


@pytest.fixture(scope="module")
def shipped_server(shipped):
    # a wide gather window, so that requests sent together reliably share one forward
    with serving(shipped, "toy-birds", gather_ms=300) as running:
        yield running


def post(url: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/images", json=body, headers=headers, timeout=60)


def decoded(response: dict) -> list[dict[str, bytes]]:
    return [{res: base64.b64decode(png) for res, png in image["png"].items()} for image in response["images"]]


# ------------------------------------------------------------------------------ same images on every path
REQUESTS = [
    {"prompt": "a small red bird with black wings", "n": 1, "seed": 5, "stage": "all"},
    {"prompt": "a large blue bird with a short yellow beak", "n": 3, "seed": 11, "stage": "all"},
    {"prompt": "a small red bird with black wings", "n": 2, "seed": 6, "stage": "256"},
    {"prompt": "a yellow bird with grey wings", "n": 1, "seed": 999, "stage": "all"},
]


@needs_shipped
def test_concurrent_requests_get_exactly_the_images_they_get_alone(shipped_server, shipped):
    url, batcher = shipped_server
    batcher.batch_sizes.clear()
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        together = list(pool.map(lambda body: post(url, body), REQUESTS))
    assert max(batcher.batch_sizes) >= 4, list(batcher.batch_sizes)  # several requests shared a forward
    alone = [post(url, body) for body in REQUESTS]
    for body, a, b in zip(REQUESTS, together, alone, strict=True):
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json() == b.json()
        out = shipped(body["prompt"], num_images_per_prompt=body["n"], seed=body["seed"])  # the library alone
        assert [image["seed"] for image in b.json()["images"]] == [body["seed"] + k for k in range(body["n"])]
        for k, pngs in enumerate(decoded(b.json())):
            for branch, res in enumerate(out.resolutions):
                if str(res) in pngs:
                    assert pngs[str(res)] == png_bytes(out.branches[branch][k]), (body, k, res)
        assert set(decoded(b.json())[0]) == ({"256"} if body["stage"] == "256" else {"64", "128", "256"})


@needs_shipped
def test_cli_serve_sample_and_pipeline_give_identical_png_bytes(runner, shipped, tmp_path):
    """The real command: startup prints the URL; its PNG equals `stackgan2 sample`'s file and the pipeline's."""
    log = tmp_path / "serve.log"
    with cli_server(log) as url:
        assert f"serving toy-birds (cpu) at {url}/" in log.read_text().splitlines()[0], log.read_text()
        assert httpx.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
        response = post(url, {"prompt": "a small orange bird", "seed": 42}, Accept="image/png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.headers["x-seed"] == "42"
    out = tmp_path / "sample"
    result = runner.invoke(cli_app, ["sample", "a small orange bird", "--seed", "42", "--device", "cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    (written,) = out.glob("*.png")
    assert written.read_bytes() == response.content
    assert png_bytes(shipped("a small orange bird", seed=42).images[0]) == response.content


# ------------------------------------------------------------------------------ the API
BAD_REQUESTS = [
    ({"prompt": ""}, 422, "prompt is empty"),
    ({"prompt": "   "}, 422, "prompt is empty"),
    ({"prompt": "zebra quantum"}, 422, "no word the text encoder knows"),
    ({"prompt": "red " * 76}, 422, "at most 300 are accepted"),
    ({"prompt": "a red\x00 bird"}, 422, "control characters"),
    ({"prompt": 5}, 422, "prompt is required and must be a string"),
    ({"n": 2}, 422, "prompt is required"),
    ({"prompt": "a red bird", "n": 0}, 422, "n must be an integer between 1 and 16, got 0"),
    ({"prompt": "a red bird", "n": 17}, 422, "n must be an integer between 1 and 16, got 17"),
    ({"prompt": "a red bird", "n": "2"}, 422, 'n must be an integer between 1 and 16, got "2"'),
    ({"prompt": "a red bird", "seed": 1.5}, 422, "seed must be null or an integer"),
    ({"prompt": "a red bird", "seed": -1}, 422, "got -1"),
    ({"prompt": "a red bird", "seed": "7"}, 422, 'got "7"'),
    ({"prompt": "a red bird", "seed": True}, 422, "got true"),
    ({"prompt": "a red bird", "stage": "512"}, 422, 'stage must be one of 8, 16, 32, all, got "512"'),
    ({"prompt": "a red bird", "stage": None}, 422, "stage must be one of"),
    ({"prompt": "a red bird", "colour": "red"}, 422, "unknown field 'colour'"),
    ([{"prompt": "a red bird"}], 422, "must be a JSON object"),
]


def test_whole_number_floats_are_integers_as_json_schema_counts_them():
    """OpenAPI 3.1's JSON Schema counts 9.0 as the integer 9 (and clients send it): the request is 9's."""
    as_floats = parse_image_request({"prompt": "a red bird", "n": 9.0, "seed": 7.0, "stage": 16.0}, [8, 16, 32])
    assert as_floats == ImageRequest("a red bird", 9, 7, (1,))
    assert type(as_floats.n) is int and type(as_floats.seed) is int
    assert parse_image_request({"prompt": "a red bird", "seed": 0.0, "stage": 32}, [8, 16, 32]).branches == (2,)


NOT_INTEGERS = [
    ("n", 9.5, "n must be an integer between 1 and 16, got 9.5"),
    ("n", True, "n must be an integer between 1 and 16, got true"),
    ("n", math.nan, "n must be an integer between 1 and 16, got NaN"),
    ("n", 17.0, "n must be an integer between 1 and 16, got 17.0"),
    ("seed", 9.5, "got 9.5"),
    ("seed", True, "got true"),
    ("seed", math.inf, "got Infinity"),
    ("seed", -1.0, "got -1.0"),
    ("seed", float(2**63), "got 9.223372036854776e+18"),  # whole, but past MAX_SEED
    ("stage", 16.5, 'stage must be one of 8, 16, 32, all, got 16.5'),
    ("stage", True, "got true"),
    ("stage", -math.inf, "got -Infinity"),
    ("stage", 64.0, "got 64.0"),
]


@pytest.mark.parametrize(("field", "value", "message"), NOT_INTEGERS)
def test_fractions_booleans_and_non_finite_numbers_are_refused_naming_the_value_sent(field, value, message):
    with pytest.raises(RequestError, match=re.escape(message)) as refused:
        parse_image_request({"prompt": "a red bird", field: value}, [8, 16, 32])
    assert refused.value.status == 422


def test_request_schema_offers_the_models_stages_as_strings_and_integers():
    schema = image_request_schema([64, 128, 256])
    assert schema["required"] == ["prompt"] and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"prompt", "n", "seed", "stage"}
    stage = schema["properties"]["stage"]
    assert stage["enum"] == ["64", "128", "256", "all", 64, 128, 256] and stage["default"] == "256"
    assert "type" not in stage  # the enum holds strings and integers
    for value in stage["enum"]:  # every value the schema allows is one the parser takes
        request = parse_image_request({"prompt": "a red bird", "stage": value}, [64, 128, 256])
        assert request.branches == ((0, 1, 2) if value == "all" else ([64, 128, 256].index(int(value)),))
    n, seed = schema["properties"]["n"], schema["properties"]["seed"]
    assert (n["type"], n["minimum"], n["maximum"]) == ("integer", 1, 16)
    assert seed["type"] == ["integer", "null"] and seed["minimum"] == 0 and type(seed["maximum"]) is int
    assert image_request_schema([8, 16, 32])["properties"]["stage"]["enum"] == ["8", "16", "32", "all", 8, 16, 32]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_bad_request_bodies_get_a_json_error_naming_the_problem(tiny_server, body, status, message):
    response = post(tiny_server[0], body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_bad_requests_of_every_kind_are_4xx_json_and_a_good_one_still_works(tiny_server):
    url, _ = tiny_server
    huge = b'{"prompt": "' + b"a" * MAX_BODY_BYTES + b'"}'
    raw = [  # (content, headers, status, message)
        (b'{"prompt": "a red bird"', {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"\xff\xfe{}", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b'{"prompt": "a red bird"}', {"Content-Type": "text/plain"}, 415, "Content-Type must be application/json"),
        (b"prompt=a+red+bird", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "got 'application/x-www-form-urlencoded'"),
        (b'{"prompt": "a red bird"}', {}, 415, "got 'none'"),
        (huge, {"Content-Type": "application/json"}, 413, "at most 65,536 are accepted"),
        (iter([huge[:40_000], huge[40_000:]]), {"Content-Type": "application/json"}, 413, "at most 65,536"),  # chunked
    ]
    for content, headers, status, message in raw:
        response = httpx.post(f"{url}/v1/images", content=content, headers=headers, timeout=30)
        assert response.status_code == status and message in response.json()["error"], response.text
    response = post(url, {"prompt": "a red bird", "n": 2}, Accept="image/png")
    assert response.status_code == 406 and "Accept: image/png returns one image" in response.json()["error"]
    for method, path, status in [("GET", "/v1/images", 405), ("GET", "/v2/images", 404), ("POST", "/healthz", 405)]:
        response = httpx.request(method, f"{url}{path}", timeout=30)
        assert response.status_code == status and path in response.json()["error"], response.text
    response = post(url, {"prompt": "a small red zebra bird", "n": 2, "seed": 3})
    assert response.status_code == 200, response.text
    assert response.json()["unknown_words"] == ["zebra"] and response.json()["seed"] == 3


def test_png_accept_header_and_random_seed(tiny_server, tiny):
    url, _ = tiny_server
    as_json = post(url, {"prompt": "a large blue bird", "stage": "16"}).json()
    assert 0 <= as_json["seed"] < 2**31 and as_json["resolutions"] == [16]
    png = post(url, {"prompt": "a large blue bird", "seed": as_json["seed"], "stage": 16}, Accept="image/png")
    assert png.headers["content-type"] == "image/png" and png.headers["x-seed"] == str(as_json["seed"])
    assert png.content == decoded(as_json)[0]["16"]
    assert png.content == png_bytes(tiny("a large blue bird", seed=as_json["seed"]).branches[1][0])
    either = post(url, {"prompt": "a large blue bird", "seed": 1}, Accept="image/png, application/json;q=0.5")
    assert either.headers["content-type"] == "image/png"
    browser_like = post(url, {"prompt": "a large blue bird", "seed": 1}, Accept="text/html,image/png;q=0.9,*/*;q=0.8")
    assert browser_like.headers["content-type"] == "image/png"
    assert post(url, {"prompt": "a large blue bird", "seed": 1}, Accept="*/*").headers["content-type"] == "application/json"


def test_model_health_docs_and_page(tiny_server):
    url, _ = tiny_server
    assert httpx.get(f"{url}/healthz").status_code == 200
    info = httpx.get(f"{url}/v1/model").json()
    assert info["name"] == "tiny" and info["resolutions"] == [8, 16, 32] and info["stages"] == 3
    assert info["architecture"] == "stackgan2" and info["training_steps"] is None and info["vocabulary_size"] > 2
    assert info["limits"] == {"max_prompt_chars": 300, "max_images": 16, "max_batch": 16, "max_body_bytes": 65536,
                              "stages": ["8", "16", "32", "all"]}
    assert httpx.get(f"{url}/docs").status_code == 200
    schema = httpx.get(f"{url}/openapi.json").json()["paths"]["/v1/images"]["post"]["requestBody"]
    assert set(schema["content"]["application/json"]["schema"]["properties"]) == {"prompt", "n", "seed", "stage"}
    page = httpx.get(url)
    assert page.headers["content-type"].startswith("text/html") and "Generate" in page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|https?://""", page.text)  # nothing from elsewhere


@needs_shipped
def test_shipped_model_info_names_no_path(shipped):
    info = model_info(shipped, "toy-birds", True, 16)
    assert info["training_steps"] == 3000 and info["resolutions"] == [64, 128, 256]  # the fine-tuning run (assets/README.md)
    assert not any("/" in str(value) for value in info.values())


def test_port_in_use_is_one_error_line(runner):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = runner.invoke(cli_app, ["serve", "--port", str(taken.getsockname()[1]), "--device", "cpu"])
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1:" in result.output, result.output


@pytest.mark.parametrize("arch", ["stackgan2", "attngan", "attngan-official-mask"])
def test_batches_stay_within_max_batch_and_each_request_gets_its_own_images(tiny, arch):
    """Prompts of different lengths share forwards; AttnGAN stacks their word features and masks. With
    the official (misaligned) mask a row's pixels see other rows' masks, so each request runs alone."""
    pipe = tiny if arch == "stackgan2" else make_tiny_pipeline(arch="attngan")
    if arch == "attngan-official-mask":
        model = pipe.config.model.model_copy(update={"attention_official_mask": True})
        generator = build_generator(model)
        generator.load_state_dict(pipe.generator.state_dict())
        pipe = Text2ImagePipeline(generator, pipe.text_encoder, pipe.config.model_copy(update={"model": model}))
    batcher = BatchingGenerator(pipe, max_batch=4, gather_ms=200)
    prompts = ["a small red bird", "a large blue bird with a short yellow beak", "red", "a bird with black wings", "a bird"]
    try:
        requests = [ImageRequest(prompt, n, seed, (0, 1, 2))
                    for prompt, (n, seed) in zip(prompts, [(3, 0), (1, 50), (2, 7), (1, 8), (16, 100)], strict=True)]
        futures = [batcher.submit(request) for request in requests]
        results = [future.result(60) for future in futures]
    finally:
        batcher.close()
    # 3+1 | 2+1 (the 16 does not fit) | 16 alone, in forwards of 4; official mask: every request alone
    assert list(batcher.batch_sizes) == ([3, 1, 2, 1, 16] if arch == "attngan-official-mask" else [4, 3, 16])
    for request, result in zip(requests, results, strict=True):
        out = pipe(request.prompt, num_images_per_prompt=request.n, seed=request.seed)
        for k in range(request.n):
            assert [png_bytes(image) for image in result.images[k]] == [png_bytes(b[k]) for b in out.branches]


def test_a_bad_prompt_fails_only_its_own_request(tiny):
    batcher = BatchingGenerator(tiny, max_batch=16, gather_ms=200)
    try:
        good = batcher.submit(parse_image_request({"prompt": "a red bird", "seed": 1}, [8, 16, 32]))
        bad = batcher.submit(parse_image_request({"prompt": "zebra", "seed": 1}, [8, 16, 32]))
        assert good.result(60).images[0][0].size == (32, 32)
        with pytest.raises(Exception, match="no word the text encoder knows"):
            bad.result(60)
    finally:
        batcher.close()


# ------------------------------------------------------------------------------ the page in a real browser
def chromium_or_skip() -> None:
    if CHROMIUM.is_file() and CHROMEDRIVER.is_file():
        return
    message = f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)  # CI installs them (.ci/run): a missing browser is a broken set-up, not a skip
    pytest.skip(message)


@needs_shipped
def test_page_generates_images_in_headless_chromium(shipped_server, tmp_path):
    """Type a prompt, press Generate, read back the rendered branches' sizes and seeds. The screenshot goes
    to $SERVE_PAGE_SCREENSHOT when set (assets/examples/serve-page.png was made that way)."""
    chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)  # with the driver path below, Selenium Manager never downloads anything
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1060,940",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get(shipped_server[0])
        WebDriverWait(driver, 30).until(lambda d: "toy-birds" in d.find_element(By.ID, "model").text)
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("a small yellow bird with blue wings and a zebra tail")
        for field, value in (("seed", "7"), ("n", "3")):
            driver.find_element(By.ID, field).clear()
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "generate").click()
        loaded = "return [...document.querySelectorAll('#results img')].map(i => i.complete ? i.naturalWidth : 0)"
        WebDriverWait(driver, 60).until(lambda d: (sizes := d.execute_script(loaded)) and all(sizes))
        assert driver.execute_script(loaded) == [64, 128, 256] * 3
        seeds = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results .seed")]
        assert seeds == ["seed 7", "seed 8", "seed 9"]
        assert driver.find_element(By.ID, "warning").text == "unknown words (ignored): zebra"
        assert driver.find_element(By.ID, "error").get_attribute("class") == "hidden"
        screenshot = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    assert screenshot.startswith(b"\x89PNG")
    if os.environ.get("SERVE_PAGE_SCREENSHOT"):
        target = Path(os.environ["SERVE_PAGE_SCREENSHOT"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(screenshot)
