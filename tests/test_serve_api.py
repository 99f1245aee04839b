"""`mnistctl serve`'s HTTP API through its ASGI app (Starlette's TestClient): every endpoint, every error, and the
JSON equal to `predict --json` for the same image."""

from __future__ import annotations

import io
import json

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install '.[serve]')")

from fastapi.testclient import TestClient  # noqa: E402
from helpers import black_on_white, mnist_like, model_file  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import mnistctl  # noqa: E402
from mnistctl.cli import app as cli  # noqa: E402
from mnistctl.serve.app import create_app  # noqa: E402


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


DIGIT = png(Image.fromarray(mnist_like()))
NUMBER = png(Image.fromarray(__import__("numpy").hstack([mnist_like(), mnist_like()])))


@pytest.fixture(scope="module")
def reader():
    return mnistctl.load_reader(device="cpu")


@pytest.fixture(scope="module")
def client(reader):
    with TestClient(create_app(reader, max_upload=200_000)) as c:
        yield c


def error_of(response) -> str:
    body = response.json()
    assert list(body) == ["error"], body
    assert " — " in body["error"], body  # "<what is wrong> — <what to do>", as the CLI says it
    assert "Traceback" not in response.text
    return body["error"]


def test_digit_json_is_exactly_predicts(client, tmp_path):
    path = tmp_path / "d.png"
    path.write_bytes(DIGIT)
    line = CliRunner().invoke(cli, ["predict", str(path), "--json", "--top-k", "2"]).stdout
    expected = json.loads(line)
    assert expected.pop("path") == str(path)
    for request in (
        {"content": DIGIT, "headers": {"content-type": "image/png"}},
        {"content": DIGIT},  # no content type: the body is taken for the image it is
        {"files": {"image": ("d.png", DIGIT, "image/png")}},
    ):
        response = client.post("/v1/digit?top_k=2", **request)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == expected


def test_number_json_is_exactly_predict_multis(client, tmp_path):
    path = tmp_path / "n.png"
    path.write_bytes(NUMBER)
    expected = json.loads(CliRunner().invoke(cli, ["predict", "--multi", str(path), "--json"]).stdout)
    del expected["path"]
    response = client.post("/v1/number", content=NUMBER, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert len(response.json()["number"]) == 2


def test_pixels_are_the_networks_input(client, reader):
    body = client.post("/v1/digit?pixels=true", content=DIGIT).json()
    assert body["pixels"] == reader.read_digit(DIGIT).pixels.tolist()
    assert len(body["pixels"]) == 28 and {len(row) for row in body["pixels"]} == {28}
    number = client.post("/v1/number?pixels=true", content=NUMBER).json()
    assert all(len(d["pixels"]) == 28 for d in number["digits"])


def test_options_reach_the_reader(client, reader):
    inverted = png(black_on_white((56, 56)))
    for image, invert in ((inverted, "auto"), (inverted, "yes"), (DIGIT, "no")):
        body = client.post(f"/v1/digit?invert={invert}", content=image).json()
        assert body == reader.read_digit(image, invert=invert).to_dict()
    assert "blank" in error_of(client.post("/v1/digit?invert=no", content=inverted))  # white paper read as ink
    raw = client.post("/v1/digit?preprocess=false", content=DIGIT).json()
    assert raw == reader.read_digit(DIGIT, preprocess=False).to_dict()


def test_several_images_in_one_request_come_back_in_order(client, reader):
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate([DIGIT, b"not an image", NUMBER])]
    response = client.post("/v1/digits", files=files)
    assert response.status_code == 200, response.text
    results = response.json()
    assert [r["path"] for r in results] == ["0.png", "1.png", "2.png"]
    assert {k: v for k, v in results[0].items() if k != "path"} == reader.read_digit(DIGIT).to_dict()
    assert "error" in results[1] and "digit" not in results[1]  # one bad image, the others still read
    assert results[2]["digit"] == reader.read_digit(NUMBER).digit


def test_model_and_health(client, reader):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["batches"] <= health["images"]
    model = client.get("/v1/model").json()
    assert model["arch"] == reader.meta.arch and model["test_accuracy"] == reader.meta.test_accuracy
    assert model["mnistctl"] == mnistctl.__version__


def test_the_page_and_its_script_ship_in_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="/page.js"' in page.text and "http" not in page.text.split("<footer>")[0]  # nothing from a CDN
    assert client.get("/page.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/digit", "/v1/number", "/v1/digits"}


@pytest.mark.parametrize(
    ("request_args", "status", "words"),
    [
        ({"content": b"\x89PNG\r\n\x1a\n broken"}, 422, "send an image of a digit"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type text/plain"),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "Content-Type: image/png"),
        ({"content": b""}, 400, "has no body"),
        ({"files": {"other": ("a.txt", b"x", "text/plain"), "more": ("b.txt", b"y", "text/plain")}}, 400, "several"),
        ({"data": {"image": "not a file"}, "files": {"unused": ("", b"", "")}}, 400, "holds no image"),
        ({"content": b"x" * 200_001}, 413, "larger than 200,000 bytes"),
    ],
    ids=["broken-png", "text", "json", "empty", "two-files", "empty-file", "too-large"],
)
def test_bad_requests_are_4xx_with_one_line(client, request_args, status, words):
    response = client.post("/v1/digit", **request_args)
    assert response.status_code == status, response.text
    assert words in error_of(response)


def test_bad_options_and_paths_are_4xx_with_one_line(client):
    assert "top_k" in error_of(client.post("/v1/digit?top_k=10", content=DIGIT))
    assert "invert" in error_of(client.post("/v1/digit?invert=maybe", content=DIGIT))
    response = client.get("/v1/digit")
    assert response.status_code == 405 and "POST" in response.headers["allow"]
    assert "GET is not accepted" in error_of(response)
    response = client.post("/v2/digit", content=DIGIT)
    assert response.status_code == 404 and "/docs" in error_of(response)
    response = client.post("/v1/digits", content=DIGIT, headers={"content-type": "image/png"})
    assert response.status_code == 415 and "multipart" in error_of(response)
    response = client.post("/v1/digits", content=b"--x--\r\n", headers={"content-type": "multipart/form-data"})
    assert response.status_code in (400, 415) and error_of(response)


def test_an_upload_over_the_limit_is_refused_before_it_is_read_whole(reader):
    # The ASGI app driven by hand, so that what it asked for can be counted: a chunked body (no Content-Length)
    # of 100 chunks of 10 kB against a limit of 200,000 bytes must be refused after about 21 chunks.
    import asyncio

    app = create_app(reader, max_upload=200_000)
    asked, sent = [], []

    async def receive():
        asked.append(1)
        return {"type": "http.request", "body": b"x" * 10_000, "more_body": len(asked) < 100}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/digit", "raw_path": b"/v1/digit", "query_string": b"",
             "headers": [(b"content-type", b"image/png")], "http_version": "1.1", "scheme": "http",
             "server": ("test", 80), "client": ("test", 1), "root_path": ""}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert "larger than 200,000 bytes" in json.loads(sent[1]["body"])["error"]
    assert len(asked) <= 21  # stopped at the limit, not read to the end


def test_a_decompression_bomb_is_refused_as_predict_refuses_it(client):
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")  # about 60 kB sent, 400 Mpx decoded
    assert bomb.tell() < 200_000
    response = client.post("/v1/digit", content=bomb.getvalue(), headers={"content-type": "image/png"})
    assert response.status_code == 422
    assert error_of(response).startswith("image too large (20000x20000 pixels")


def test_an_unexpected_failure_is_a_500_without_a_traceback(reader, monkeypatch):
    app = create_app(reader)

    def broken(*args, **kwargs):
        raise RuntimeError("something deep broke")

    monkeypatch.setattr(reader, "read_digits", broken)  # the one way to make the reader itself fail
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post("/v1/digit", content=DIGIT)
    assert response.status_code == 500
    assert "something deep broke" not in response.text and "log" in error_of(response)


def test_concurrent_requests_share_a_forward_pass_and_each_gets_its_own_answer(reader):
    from concurrent.futures import ThreadPoolExecutor

    images = [DIGIT, png(black_on_white((56, 56)))] * 8
    expected = [reader.read_digit(image).to_dict() for image in images]
    with TestClient(create_app(reader, max_wait=0.2)) as c:  # a lone request waits up to 0.2 s for company
        with ThreadPoolExecutor(len(images)) as pool:
            answers = list(pool.map(lambda image: c.post("/v1/digit", content=image).json(), images))
        health = c.get("/healthz").json()
    # Batched, the network may round differently in the last bits than one image at a time.
    assert [a["digit"] for a in answers] == [e["digit"] for e in expected]
    for a, e in zip(answers, expected, strict=True):
        assert a["probabilities"] == pytest.approx(e["probabilities"], abs=1e-4)
    assert health["images"] == len(images) and health["batches"] < len(images)


def test_the_image_field_is_found_by_its_name_among_other_files(client, reader):
    files = [("other", ("o.png", NUMBER, "image/png")), ("image", ("named-anything.png", DIGIT, "image/png"))]
    response = client.post("/v1/digit", files=files)
    assert response.status_code == 200, response.text
    assert response.json() == reader.read_digit(DIGIT).to_dict()


def test_declining_is_an_answer_with_its_options(tmp_path):
    # A model that gives every image 4 at 0.69: declined above that bar, a 200 like any reading.
    reader = mnistctl.load_reader(model_file(tmp_path / "m.pt", bias={4: 3.0}), device="cpu")
    with TestClient(create_app(reader, max_upload=200_000)) as client:
        assert client.post("/v1/digit", content=DIGIT).json()["digit"] == 4
        unsure = client.post("/v1/digit?min_confidence=0.9", content=DIGIT)
        assert unsure.status_code == 200
        assert unsure.json()["digit"] is None and unsure.json()["reason"] == "unsure"
        always = client.post("/v1/digit?min_confidence=0.9&always_answer=true", content=DIGIT)
        assert always.json()["digit"] == 4 and "reason" not in always.json()
        number = client.post("/v1/number?min_confidence=0.9", content=NUMBER).json()
        assert number["number"] == "??" and [d["reason"] for d in number["digits"]] == ["unsure", "unsure"]
        many = client.post("/v1/digits?min_confidence=0.9", files={"a": ("a.png", DIGIT, "image/png")}).json()
        assert many[0]["path"] == "a.png" and many[0]["reason"] == "unsure"
        assert client.post("/v1/digit?min_confidence=2", content=DIGIT).status_code == 422


def test_a_model_that_gives_nan_is_answered_with_nulls_not_a_500(tmp_path):
    # Finite weights (a NaN in a file is refused), but the largest float over a temperature of 0.5 is infinite for
    # two classes, and the softmax of two infinities is NaN: unsure, with no number to show (as predict --json).
    huge = 3.4e38
    model = model_file(tmp_path / "nan.pt", bias={0: huge, 1: huge}, temperature=0.5)
    reader = mnistctl.load_reader(model, device="cpu", line_model=False)  # the number read by this model too
    with TestClient(create_app(reader, max_upload=200_000)) as client:
        digit = client.post("/v1/digit?top_k=1", content=DIGIT)
        assert digit.status_code == 200, digit.text
        body = digit.json()
        assert body["digit"] is None and body["reason"] == "unsure" and body["confidence"] is None
        assert body["probabilities"] == [None] * 10 and body["top_k"][0]["probability"] is None
        number = client.post("/v1/number", content=NUMBER)
        assert number.status_code == 200 and number.json()["confidence"] is None
