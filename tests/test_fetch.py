"""fetch_model against a real HTTP server on 127.0.0.1 (an ephemeral port, in a thread)."""

from __future__ import annotations

import functools
import hashlib
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from gpu_worker.embed.cards import ModelCard
from gpu_worker.embed.fetch import default_models_dir, fetch_model, sha256_file
from shared.errors import ModelError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 2_500_000, dtype=np.uint8).tobytes()  # > 2 read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class CountingHandler(SimpleHTTPRequestHandler):
    """Serves a folder and counts GET requests per path."""

    counts: dict[str, int]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.counts[self.path] = self.counts.get(self.path, 0) + 1
        super().do_GET()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        pass


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    (root / "model.onnx").write_bytes(PAYLOAD)
    counts: dict[str, int] = {}
    handler = type("Handler", (CountingHandler,), {"counts": counts})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", counts
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def card(sha256: str | None = PAYLOAD_SHA, url: str | None = None) -> ModelCard:
    return ModelCard(name="served", description="d", licence="l", input_size=112, color_order="RGB",
                     mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), layout="NCHW", output_dim=8,
                     template="arcface_112", threshold=0.5, sha256=sha256, url=url)


def test_good_download(server, tmp_path):
    base, counts = server
    dest = tmp_path / "models" / "nested"
    path = fetch_model(card(url=f"{base}/model.onnx"), dest)
    assert path == dest / "served.onnx"
    assert path.read_bytes() == PAYLOAD and sha256_file(path) == PAYLOAD_SHA
    assert sorted(p.name for p in dest.iterdir()) == ["served.onnx"]
    assert counts == {"/model.onnx": 1}


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, _ = server
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match=f"has sha256 {PAYLOAD_SHA}, expected {'1' * 64}; nothing was kept"):
        fetch_model(card(sha256="1" * 64), dest, url=f"{base}/model.onnx")
    assert list(dest.iterdir()) == []


def test_http_404_is_a_model_error(server, tmp_path):
    base, _ = server
    dest = tmp_path / "models"
    with pytest.raises(ModelError, match="HTTP 404"):
        fetch_model(card(), dest, url=f"{base}/missing.onnx")
    assert list(dest.iterdir()) == []


def test_present_file_is_not_downloaded_again_but_a_bad_one_is(server, tmp_path):
    base, counts = server
    c = card(url=f"{base}/model.onnx")
    path = fetch_model(c, tmp_path)
    assert fetch_model(c, tmp_path) == path
    assert counts == {"/model.onnx": 1}
    path.write_bytes(b"truncated")
    assert fetch_model(c, tmp_path).read_bytes() == PAYLOAD
    assert counts == {"/model.onnx": 2}


def test_refused_connection_is_a_model_error(tmp_path):
    with socket.socket() as s:  # bound but not listening for the whole call: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(ModelError, match="download of .* failed"):
            fetch_model(card(), tmp_path, url=f"http://127.0.0.1:{port}/model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_needs_a_checksum_and_a_url(server, tmp_path):
    base, _ = server
    with pytest.raises(ModelError, match="publishes no sha256"):
        fetch_model(card(sha256=None), tmp_path, url=f"{base}/model.onnx")
    with pytest.raises(ModelError, match="no download URL"):
        fetch_model(card(), tmp_path)
    with pytest.raises(ModelError, match="must be http"):
        fetch_model(card(), tmp_path, url="file:///etc/passwd")
    path = fetch_model(card(sha256=None), tmp_path, url=f"{base}/model.onnx", sha256=PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD


def test_default_models_dir():
    d = default_models_dir()
    assert isinstance(d, Path) and d.name == "models" and "argusnet" in d.parent.name.lower()


def test_cli_models_fetch_with_a_card_file(server, tmp_path, cli):
    base, counts = server
    card_file = tmp_path / "served.yaml"
    fields = card(url=f"{base}/model.onnx").model_dump(mode="json")
    card_file.write_text(yaml.safe_dump({k: v for k, v in fields.items() if v is not None}))
    r = cli("models", "fetch", card_file, "--dest", tmp_path / "m")
    assert r.code == 0, r.err
    assert (tmp_path / "m" / "served.onnx").read_bytes() == PAYLOAD
    r = cli("models", "fetch", card_file, "--dest", tmp_path / "m2", "--sha256", "0" * 64)
    assert r.code == 1 and "expected 0000" in r.err and not (tmp_path / "m2" / "served.onnx").exists()
    r = cli("models", "list", "--json")
    assert r.code == 0 and "arcface_w600k_r50" in r.out
