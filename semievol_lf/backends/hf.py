"""transformers + peft backend: one base model in memory, the warm adapter toggled per request.

The "adapter" may also be a fully fine-tuned model (LlamaFactory `finetuning_type: full`
writes a whole model, no adapter_config.json); it is then loaded as a second model.
Runs on the CPU (the default here) or one GPU. Requests are grouped by adapter on/off, then sorted
by length into batches (`length_batches`). Each prompt is prefilled alone (no padding computed; the
unmasked causal attention path) and the caches are left-padded into one for the batched decode
(`_prefill`); a score is one sequence per forward pass. Only the logits that are read are computed
(`logits_to_keep`: the last position while generating, the response's while scoring): the output layer
(49k x 576 on SmolLM2) is a fifth of the model's work per token. A score does not depend on the
requests beside it, so a shard's entropies equal the unsharded run's byte for byte.
Sampling is done by this module, one torch.Generator per request seeded by `request.seed`, so a
request's sample does not depend on its batch neighbours. Not handled: multi-GPU.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ..errors import UserError
from .base import SORT_WINDOW, Generation, GenerationRequest, ScoreRequest


def resolve_dtype(dtype: str, device: str, bf16_supported: bool) -> tuple[str, str]:
    """(torch dtype name, why) for `dtype` "auto" or an explicit name.

    >>> resolve_dtype("auto", "cuda", True)
    ('bfloat16', 'auto: bf16 on a GPU that supports it (half the memory of float32, same range)')
    >>> resolve_dtype("auto", "cpu", False)[0]
    'float32'
    """
    if dtype != "auto":
        return dtype, "set by `backend_args.dtype`"
    if device.startswith("cuda"):
        if bf16_supported:
            return "bfloat16", "auto: bf16 on a GPU that supports it (half the memory of float32, same range)"
        return "float16", "auto: this GPU has no bf16; float16 halves the memory of float32"
    return "float32", "auto: float32 on the CPU (bf16 matmuls are slow or missing there)"


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths` in batches of at most `batch_size`, longest first, so a batch pads little.

    Ties keep their order, so the batches depend only on the lengths.
    >>> length_batches([3, 9, 4, 8, 1], 2)
    [[1, 3], [2, 0], [4]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class HFBackend:
    name = "hf"

    def __init__(self, model_name_or_path: str, adapter_name_or_path: str | None = None, *,
                 stop_ids: tuple[int, ...] = (), decode: Callable | None = None, device: str | None = None,
                 dtype: str = "auto", batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        bf16 = self.device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        dtype, why = resolve_dtype(dtype, self.device, bf16)
        self.description = f"hf backend: {dtype} on {self.device} ({why})"

        def load(path: str, key: str):
            try:
                return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(self.device).eval()
            except OSError as err:
                raise UserError(f"`{key}`: cannot load {path!r} ({err})") from None

        model = load(model_name_or_path, "model_name_or_path")
        self.full_warm = None  # a fully fine-tuned warm model, used instead of an adapter
        if adapter_name_or_path and not Path(adapter_name_or_path, "adapter_config.json").is_file() \
                and Path(adapter_name_or_path, "config.json").is_file():
            self.full_warm = load(adapter_name_or_path, "adapter_name_or_path")
        elif adapter_name_or_path:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, adapter_name_or_path).eval()
            except (OSError, ValueError) as err:
                raise UserError(f"`adapter_name_or_path`: cannot load {adapter_name_or_path!r} ({err})") from None
        self.model = model
        self.has_adapter = bool(adapter_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path) if decode is None else None
        self.decode = decode or (lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True))
        config = self.model.config
        self.pad_id = config.pad_token_id if config.pad_token_id is not None else 0
        self.stop_ids = set(stop_ids) or {config.eos_token_id}
        self.batch_size = batch_size
        self.chunk_size = batch_size * SORT_WINDOW
        from transformers.cache_utils import DynamicCache, DynamicLayer

        # `_prefill` merges per-prompt caches only where a cache is a plain key/value per layer (the config says)
        self.plain_cache = all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)

    @contextmanager
    def _adapter(self, on: bool) -> Iterator[None]:
        """Within the block `self.model` is the requested model: base, or base + warm adapter."""
        if on and not self.has_adapter:
            raise UserError("a request asked for the warm adapter but no `adapter_name_or_path` is set")
        if self.full_warm is not None:
            base, self.model = self.model, (self.full_warm if on else self.model)
            try:
                yield
            finally:
                self.model = base
            return
        with nullcontext() if on or not self.has_adapter else self.model.disable_adapter():
            yield

    def _batches(self, requests: list, length: Callable) -> Iterator[tuple[bool, list[int]]]:
        """(adapter flag, request indices): each flag's requests in `length_batches` of `length(request)`."""
        for flag in (False, True):
            idx = [i for i, r in enumerate(requests) if r.adapter == flag]
            for batch in length_batches([length(requests[i]) for i in idx], self.batch_size):
                yield flag, [idx[b] for b in batch]

    def _left_pad(self, seqs: list[tuple[int, ...]]):
        torch = self.torch
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        out: list[Generation | None] = [None] * len(requests)
        for flag, idx in self._batches(requests, lambda r: len(r.prompt_ids)):
            with self._adapter(flag):
                for i, ids in zip(idx, self._generate_batch([requests[i] for i in idx])):
                    out[i] = Generation(text=self.decode(ids), token_ids=tuple(ids))
        return out  # type: ignore[return-value]

    def _prefill(self, batch: list) -> tuple:
        """(last-position logits, left-padded batch cache, attention mask): each prompt's forward alone, so no
        padding is computed and attention takes its unmasked causal path (a padded batch of mixed lengths
        ran at about half the speed of the same prompts one at a time on the CPU: bench/RESULTS.md), then
        the caches are left-padded into one for the batched decode. Models whose cache is not a plain
        key/value per layer (sliding windows, linear attention) get one padded forward instead."""
        torch = self.torch
        from transformers.cache_utils import DynamicCache

        ids, mask = self._left_pad([r.prompt_ids for r in batch])
        if not self.plain_cache:
            res = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                             use_cache=True, logits_to_keep=1)
            return res.logits[:, -1, :], res.past_key_values, mask
        logits, caches = [], []
        for r in batch:
            res = self.model(input_ids=torch.tensor([r.prompt_ids], dtype=torch.long, device=self.device),
                             use_cache=True, logits_to_keep=1)
            logits.append(res.logits[0, -1])
            caches.append(res.past_key_values)
        width = ids.shape[1]
        merged = DynamicCache(config=self.model.config)
        left = torch.nn.functional.pad
        for n, layers in enumerate(zip(*(c.layers for c in caches))):
            pad = [(0, 0, width - layer.keys.shape[-2], 0) for layer in layers]
            merged.update(torch.cat([left(layer.keys, p) for layer, p in zip(layers, pad)]),
                          torch.cat([left(layer.values, p) for layer, p in zip(layers, pad)]), n)
        return torch.stack(logits), merged, mask

    def _generate_batch(self, batch: list[GenerationRequest]) -> list[list[int]]:
        torch = self.torch
        gens = [torch.Generator().manual_seed(r.seed) for r in batch]
        max_new = max(r.max_new_tokens for r in batch)
        outputs: list[list[int]] = [[] for _ in batch]
        done = [False] * len(batch)
        step_ids = None  # the tokens just picked, fed at the next step
        with torch.inference_mode():
            logits, past, mask = self._prefill(batch)
            for step in range(max_new):
                if step:
                    res = self.model(input_ids=step_ids, attention_mask=mask,
                                     position_ids=mask.sum(-1, keepdim=True) - 1, past_key_values=past, use_cache=True,
                                     logits_to_keep=1)
                    past, logits = res.past_key_values, res.logits[:, -1, :]
                logits = logits.float().cpu()
                next_ids = []
                for row, req in enumerate(batch):
                    token = self._pick(logits[row], req, gens[row]) if not done[row] else self.pad_id
                    if not done[row]:
                        if token in self.stop_ids:
                            done[row] = True
                        else:
                            outputs[row].append(token)
                            done[row] = len(outputs[row]) >= req.max_new_tokens
                    next_ids.append(token)
                if all(done):
                    break
                step_ids = torch.tensor(next_ids, dtype=torch.long, device=self.device)[:, None]
                mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        return outputs

    def _pick(self, logits, req: GenerationRequest, gen) -> int:
        torch = self.torch
        if req.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / req.temperature, dim=-1)
        if req.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < req.top_p  # always keeps the top token
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=gen))

    def score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        """One sequence per forward pass, computing only the response's logits: unpadded, it runs near the
        matmul limit (a padded batch does not: `_prefill`), and a score does not depend on which requests
        share its chunk, so a shard scores byte for byte what the unsharded run scores."""
        torch = self.torch
        out: list[list[float] | None] = [None] * len(requests)
        for flag, idx in self._batches(requests, lambda r: len(r.prompt_ids) + len(r.response_ids)):
            with self._adapter(flag), torch.inference_mode():
                for i in idx:
                    n = len(requests[i].response_ids)
                    if not n:
                        out[i] = []
                        continue
                    ids = torch.tensor([requests[i].prompt_ids + requests[i].response_ids], device=self.device)
                    # the last n + 1 positions' logits: each but the last predicts the token after it
                    logits = self.model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1].float()
                    out[i] = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, -n:, None])[:, 0].cpu().tolist()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Drop the models and hand their GPU memory back, so the next fine-tune starts on a free GPU."""
        import gc

        self.model = self.full_warm = None
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
