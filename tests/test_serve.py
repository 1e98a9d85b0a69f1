"""``portraitseg serve``'s HTTP API, in process (Starlette's TestClient) with the bundled model:
each option, each error status, health, the bounded queue, and the server still serving after bad
uploads; a slow upload against a real uvicorn server; the ``serve`` command's usage errors."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from portraitseg.serve.limits import ServeLimits

LIMITS = ServeLimits(max_upload_bytes=400_000, max_pixels=1_000_000, timeout=1.0)


def encode(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage.data import astronaut

    return np.asarray(Image.fromarray(astronaut()).resize((160, 160), Image.LANCZOS))


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    from portraitseg.serve.engine import Engine

    engine = Engine.load("default", "disc", LIMITS, "cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def client(engine: object) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from portraitseg.serve.app import create_app

    with TestClient(create_app(engine)) as client:
        yield client


def post(client: object, data: bytes, **params: str) -> object:
    return client.post("/api/portrait", params=params, content=data)


def test_health(client: object) -> None:
    from portraitseg import __version__

    body = client.get("/api/health").json()
    assert body == {"ok": True, "model": "default", "version": __version__, "queue": 0,
                    "capacity": LIMITS.capacity}


def test_page_and_its_files_are_served(client: object) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in ("app.js", "style.css"):
        assert f"/static/{name}" in page.text and client.get(f"/static/{name}").status_code == 200
    options = client.get("/api/options").json()
    assert options["presets"] == ["disc", "gaussian", "halo_free"] and len(options["classes"]) == 11


def test_raw_upload_gives_a_jpeg_portrait_of_the_photo_size(client: object, photo: np.ndarray) -> None:
    response = post(client, encode(photo))
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    portrait = decode(response.content)
    assert portrait.shape == photo.shape
    alpha = decode(post(client, encode(photo), alpha="1").content) / 255.0
    diff = np.abs(portrait.astype(float) - photo).mean(axis=2)
    assert diff[alpha < 0.05].mean() > 2 * diff[alpha > 0.95].mean()


def test_multipart_upload_and_format_choice(client: object, photo: np.ndarray) -> None:
    data = encode(photo, "JPEG")
    form = client.post("/api/portrait", files={"image": ("a.jpg", data, "image/jpeg")},
                       data={"format": "png", "strength": "0.02"})
    assert form.status_code == 200 and form.headers["content-type"] == "image/png"
    accepted = client.post("/api/portrait", content=data, headers={"Accept": "image/png,image/jpeg;q=0.8"})
    assert accepted.headers["content-type"] == "image/png"
    preferred = client.post("/api/portrait", content=data, headers={"Accept": "image/png;q=0.5,image/jpeg"})
    assert preferred.headers["content-type"] == "image/jpeg"
    assert decode(form.content).shape == photo.shape


def test_each_option_changes_the_portrait(client: object, photo: np.ndarray) -> None:
    data = encode(photo)
    base = decode(post(client, data, format="png").content).astype(float)
    assert np.array_equal(decode(post(client, data, format="png", strength="0").content), photo)
    for name, value in [("preset", "gaussian"), ("strength", "0.04"), ("falloff", "0"), ("feather", "0.05"),
                        ("highlights", "20"), ("subject", "face"), ("keep", "hair,skin")]:
        response = post(client, data, format="png", **{name: value})
        assert response.status_code == 200, response.text
        assert np.abs(decode(response.content) - base).max() > 10, f"{name}={value} changed nothing"


def test_alpha_is_an_8bit_png_matte(client: object, photo: np.ndarray) -> None:
    response = post(client, encode(photo), alpha="1")
    assert response.headers["content-type"] == "image/png"
    matte = decode(response.content)
    assert matte.shape == photo.shape[:2] and matte.dtype == np.uint8 and matte.max() == 255


def test_focus_and_all_people(client: object, photo: np.ndarray) -> None:
    data = encode(photo)
    on_face = post(client, data, focus="0.45,0.25")
    assert on_face.status_code == 200 and "x-portrait-notes" not in on_face.headers
    nowhere = post(client, data, focus="2,2")
    assert nowhere.status_code == 200 and "no%20person" in nowhere.headers["x-portrait-notes"]
    assert post(client, data, all_people="1").status_code == 200
    bad = post(client, data, focus="left")
    assert bad.status_code == 400 and "focus 'left'" in bad.json()["error"]


@pytest.mark.parametrize(("params", "named"), [
    ({"blur": "1"}, "unknown parameter 'blur'; the parameters are: preset"),
    ({"preset": "bokeh"}, "choose one of disc, gaussian, halo_free"),
    ({"strength": "2"}, "strength='2' is out of range"),
    ({"strength": "nan"}, "strength='nan' is out of range"),
    ({"highlights": "lots"}, "highlights='lots' is not a number"),
    ({"subject": "dog"}, "choose one of person, person_grabcut, face"),
    ({"keep": "tail"}, "unknown class 'tail'"),
    ({"format": "gif"}, "choose one of jpeg, jpg, png"),
    ({"alpha": "maybe"}, "alpha='maybe' is not a yes/no value"),
])
def test_bad_options_are_400_naming_them(client: object, photo: np.ndarray, params: dict, named: str) -> None:
    response = post(client, encode(photo), **params)
    assert response.status_code == 400 and named in response.json()["error"]


def bad_uploads(photo: np.ndarray) -> list[tuple[str, bytes, int, str]]:
    """(what, body, status, words of the message)."""
    jpeg = encode(photo, "JPEG")
    bomb = encode(np.zeros((1200, 1000, 3), np.uint8))  # 1.2 MP in a few kB, over the 1 MP limit
    return [("empty", b"", 400, "no photo"), ("text", b"hello, not a photo", 400, "not an image"),
            ("truncated", jpeg[: len(jpeg) // 2], 400, "truncated"),
            ("bomb", bomb, 413, "1,200,000 pixels, over the server's limit of 1,000,000"),
            ("too large", b"\0" * (LIMITS.max_upload_bytes + 1), 413,
             "over the server's limit of 400,000 bytes")]


def test_bad_uploads_are_4xx_and_the_server_keeps_serving(client: object, photo: np.ndarray) -> None:
    for what, body, status, words in bad_uploads(photo):
        response = post(client, body)
        assert response.status_code == status, what
        assert words in response.json()["error"], (what, response.json())
    no_image = client.post("/api/portrait", files={"photo": ("a.png", encode(photo), "image/png")})
    assert no_image.status_code == 400 and "no file field 'image'" in no_image.json()["error"]
    assert post(client, encode(photo)).status_code == 200
    assert client.get("/api/health").json()["queue"] == 0


def test_a_failing_render_is_500_and_the_server_keeps_serving(client: object, engine: object,
                                                               photo: np.ndarray,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes, options: object) -> None:
        raise RuntimeError("a fault injected into the render")

    with monkeypatch.context() as patch:
        patch.setattr(engine, "render", broken)
        response = post(client, encode(photo))
    assert response.status_code == 500
    assert "RuntimeError: a fault injected" in response.json()["error"]
    assert "still running" in response.json()["error"]
    assert post(client, encode(photo)).status_code == 200


def test_a_full_queue_is_503_with_retry_after(engine: object, photo: np.ndarray) -> None:
    from fastapi.testclient import TestClient

    from portraitseg.serve.app import create_app
    from portraitseg.serve.engine import Engine

    small = Engine(engine.base, ServeLimits(workers=1, queue=1))
    release = threading.Event()
    try:
        blockers = [small.queue.submit(release.wait) for _ in range(2)]
        with TestClient(create_app(small)) as busy:
            assert busy.get("/api/health").json()["queue"] == 2
            response = busy.post("/api/portrait", content=encode(photo))
            assert response.status_code == 503 and response.headers["retry-after"] == "2"
            assert "busy" in response.json()["error"]
            release.set()
            for blocker in blockers:
                blocker.result(timeout=10)
            assert busy.post("/api/portrait", content=encode(photo)).status_code == 200
    finally:
        release.set()
        small.close()


def test_pipelines_share_the_loaded_model(engine: object) -> None:
    from portraitseg.serve.options import RenderOptions

    first = engine.pipeline_for(RenderOptions("gaussian", (("strength", 0.03),)))
    assert engine.pipeline_for(RenderOptions("gaussian", (("strength", 0.03),))) is first
    assert first.segmenter is engine.base.segmenter and first.face_finder is engine.base.face_finder
    other = engine.pipeline_for(RenderOptions("disc", (), (1, 10), "face", all_people=True))
    assert other is not first and other.keep == (1, 10) and other.subject == "face" and other.people == "all"


def test_a_slow_upload_is_408_within_the_timeout(engine: object) -> None:
    import uvicorn

    from portraitseg.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            start = time.monotonic()
            conn.sendall(b"POST /api/portrait HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            conn.sendall(b"\xff" * 10)  # then nothing: slower than the 1 s timeout
            reply = conn.recv(4096)
            elapsed = time.monotonic() - start
            while b"did not arrive" not in reply and (more := conn.recv(4096)):
                reply += more
        reply = reply.decode("latin-1")
        assert reply.startswith("HTTP/1.1 408"), reply
        assert "did not arrive within 1 s" in reply and elapsed < LIMITS.timeout + 2
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_server_imports_no_training_stack() -> None:
    code = ("from portraitseg.serve.engine import Engine\nfrom portraitseg.serve.app import create_app\n"
            "create_app(Engine.load('default', device='cpu'))\nimport sys\n"
            "print(sorted(m for m in ('lightning', 'hydra', 'wandb', 'albumentations') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr


def test_serve_command_usage_errors(tmp_path: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "portraitseg.cli.main", "serve", "--port", str(port)],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"port {port} on 127.0.0.1 is in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    missing = tmp_path / "missing.ckpt"
    proc = subprocess.run([sys.executable, "-m", "portraitseg.cli.main", "serve", "--ckpt", str(missing),
                           "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and str(missing) in proc.stderr and "Traceback" not in proc.stderr


def test_serve_help_imports_no_torch() -> None:
    code = ("from portraitseg.cli.main import main\ntry: main(['serve', '--help'])\nexcept SystemExit: pass\n"
            "import sys\nprint(sorted(m for m in ('torch', 'fastapi', 'lightning') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--max-upload-bytes" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr


@pytest.mark.parametrize(("field", "value"), [("workers", 0), ("queue", -1), ("timeout", 0.0),
                                              ("timeout", float("inf")), ("quality", 101),
                                              ("max_pixels", 1.5)])
def test_limits_refuse_bad_values_naming_them(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}="):
        ServeLimits(**{field: value})
