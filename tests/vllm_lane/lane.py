"""What the vLLM lane's test files share: paths, the main venv's python, the `tiny` fixture and a
`vllm serve` process. (Not a conftest.py: that module name belongs to tests/conftest.py.)"""

import importlib.util
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[2]
# The LlamaFactory venv: builds fixtures (peft), trains, runs the hf backend and the openai client side.
MAIN_PYTHON = os.environ.get("SEMIEVOL_MAIN_PYTHON", str(REPO / ".venv" / "bin" / "python"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[str, str]:
    """(model, adapter): SEMIEVOL_TINY_MODEL / SEMIEVOL_TINY_ADAPTER when both are set, else built by
    make_fixtures.py with the main venv's python (it has peft; this venv does not)."""
    model, adapter = os.environ.get("SEMIEVOL_TINY_MODEL"), os.environ.get("SEMIEVOL_TINY_ADAPTER")
    if model and adapter:
        return model, adapter
    if not Path(MAIN_PYTHON).exists():
        pytest.skip(f"no fixtures: set SEMIEVOL_TINY_MODEL/SEMIEVOL_TINY_ADAPTER or create {MAIN_PYTHON}")
    out = tmp_path_factory.mktemp("vllm-fixtures")
    subprocess.run([MAIN_PYTHON, str(Path(__file__).with_name("make_fixtures.py")), "--out", str(out)], check=True)
    return str(out / "model"), str(out / "adapter")


def load_script(name: str, path: Path):
    """Import a file that is not in a package (bench/, scripts/)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve = load_script("serve_vllm", REPO / "scripts" / "serve_vllm.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vllm serve` of a model and adapter on a free port, in its own process group (so a kill takes
    its engine too)."""

    def __init__(self, model: str, adapter: str | None, log_dir: Path, max_model_len: int = 256,
                 allow_loading: bool = False, extra: list[str] = (), **lora):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.model = model  # its served name
        self.cmd = serve.serve_command(model, adapter, port=self.port, on_cpu=serve.running_on_cpu(), **lora,
                                       extra=["--dtype", "float32", "--max-model-len", str(max_model_len),
                                              "--seed", "0", *extra])
        self.env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} if allow_loading else {}
        self.log_dir, self.proc, self.starts = log_dir, None, []

    def start(self) -> None:
        log = self.log_dir / f"server-{len(self.starts)}.log"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"), **self.env}
        with open(log, "w") as out:  # the child keeps its own copy of the file descriptor
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        try:
            self.starts.append(serve.wait_healthy(self.url, self.proc, timeout=400))
        except (RuntimeError, TimeoutError):
            self.kill()
            raise RuntimeError(f"vllm serve did not start; see {log}:\n{log.read_text()[-3000:]}") from None

    def models(self) -> list[dict]:
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/models", timeout=10) as resp:
            return json.loads(resp.read())["data"]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
