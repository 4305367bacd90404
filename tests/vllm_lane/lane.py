"""What the vLLM lane's test files share: paths, the main venv's python, and a `vllm serve` process."""

import importlib.util
import os
import signal
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The LlamaFactory venv: builds fixtures (peft), trains, runs the hf backend and the openai client side.
MAIN_PYTHON = os.environ.get("SEMIEVOL_MAIN_PYTHON", str(REPO / ".venv" / "bin" / "python"))


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

    def __init__(self, model: str, adapter: str, log_dir: Path, max_model_len: int = 256):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = serve.serve_command(model, adapter, port=self.port, on_cpu=serve.running_on_cpu(),
                                       extra=["--dtype", "float32", "--max-model-len", str(max_model_len),
                                              "--seed", "0"])
        self.log_dir, self.proc, self.starts = log_dir, None, []

    def start(self) -> None:
        log = self.log_dir / f"server-{len(self.starts)}.log"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        with open(log, "w") as out:  # the child keeps its own copy of the file descriptor
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        try:
            self.starts.append(serve.wait_healthy(self.url, self.proc, timeout=400))
        except (RuntimeError, TimeoutError):
            self.kill()
            raise RuntimeError(f"vllm serve did not start; see {log}:\n{log.read_text()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
