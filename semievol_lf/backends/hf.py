"""transformers + peft backend: one base model in memory, the warm adapter toggled per request.

The "adapter" may also be a fully fine-tuned model (LlamaFactory `finetuning_type: full`
writes a whole model, no adapter_config.json); it is then loaded as a second model.
Runs on the CPU (the default here) or one GPU. Requests are grouped by adapter on/off;
generation runs in left-padded batches, scoring one sequence at a time (a padded batch's shape
moves scores in the 7th digit, so a shard would not equal the unsharded run byte for byte).
Sampling is done by this module, one torch.Generator per request seeded by `request.seed`, so a
request's sample does not depend on its batch neighbours. Not handled: multi-GPU.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ..errors import UserError
from .base import Generation, GenerationRequest, ScoreRequest


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
        self.chunk_size = batch_size  # one cached chunk per forward batch

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

    def _batches(self, requests: list) -> Iterator[tuple[bool, list[int]]]:
        """(adapter flag, request indices) groups of at most `batch_size`, in request order."""
        for flag in (False, True):
            idx = [i for i, r in enumerate(requests) if r.adapter == flag]
            for start in range(0, len(idx), self.batch_size):
                yield flag, idx[start:start + self.batch_size]

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
        for flag, idx in self._batches(requests):
            with self._adapter(flag):
                for i, ids in zip(idx, self._generate_batch([requests[i] for i in idx])):
                    out[i] = Generation(text=self.decode(ids), token_ids=tuple(ids))
        return out  # type: ignore[return-value]

    def _generate_batch(self, batch: list[GenerationRequest]) -> list[list[int]]:
        torch = self.torch
        ids, mask = self._left_pad([r.prompt_ids for r in batch])
        gens = [torch.Generator().manual_seed(r.seed) for r in batch]
        max_new = max(r.max_new_tokens for r in batch)
        outputs: list[list[int]] = [[] for _ in batch]
        done = [False] * len(batch)
        past, step_ids = None, ids
        with torch.inference_mode():
            for _ in range(max_new):
                position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
                res = self.model(input_ids=step_ids, attention_mask=mask, position_ids=position_ids,
                                 past_key_values=past, use_cache=True)
                past = res.past_key_values
                logits = res.logits[:, -1, :].float().cpu()
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
        """One sequence per forward pass: in a padded batch the float sums depend on the batch's shape (the
        7th digit of an entropy moved with the chunk's neighbours), and a score must not depend on which
        requests share its chunk (a shard scores what the unsharded run scores). One forward per pseudo-label
        is small beside generation."""
        torch = self.torch
        out: list[list[float] | None] = [None] * len(requests)
        for flag, idx in self._batches(requests):
            with self._adapter(flag), torch.inference_mode():
                for i in idx:
                    seq = requests[i].prompt_ids + requests[i].response_ids
                    ids = torch.tensor([seq], dtype=torch.long, device=self.device)
                    logits = self.model(input_ids=ids).logits.float()
                    logprobs = torch.log_softmax(logits[0, :-1], dim=-1)
                    token_lp = logprobs.gather(-1, ids[0, 1:, None])[:, 0].cpu()
                    n = len(requests[i].response_ids)
                    out[i] = token_lp[len(token_lp) - n:].tolist() if n else []
        return out  # type: ignore[return-value]

    def close(self) -> None:
        """Drop the models and hand their GPU memory back, so the next fine-tune starts on a free GPU."""
        import gc

        self.model = self.full_warm = None
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
