"""Render prompts into token ids with the LlamaFactory template that the fine-tunes use.

Inference therefore sees exactly the training format: `encode_oneturn` is the function
LlamaFactory's SFT preprocessing calls. Backends receive ids, never text to re-tokenise.
"""

from functools import cached_property

from .errors import UserError


class ChatFormat:
    def __init__(self, model_name_or_path: str, template: str):
        from transformers import AutoTokenizer

        from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments

        if template not in TEMPLATES:
            raise UserError(f"`template`: unknown LlamaFactory template {template!r}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=True)
        except OSError as err:
            raise UserError(f"`model_name_or_path`: cannot load a tokenizer from {model_name_or_path!r} ({err})") from None
        self.template = get_template_and_fix_tokenizer(self.tokenizer, DataArguments(template=template))

    @cached_property
    def stop_ids(self) -> tuple[int, ...]:
        return tuple(self.template.get_stop_token_ids(self.tokenizer))

    def encode(self, prompt: str, response: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(prompt ids, response ids) as the SFT data processor builds them."""
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        prompt_ids, response_ids = self.template.encode_oneturn(self.tokenizer, messages)
        return tuple(prompt_ids), tuple(response_ids)

    def prompt_ids(self, prompt: str) -> tuple[int, ...]:
        return self.encode(prompt)[0]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def open_chat_format(cfg) -> "ChatFormat":
    return ChatFormat(cfg.model_name_or_path, cfg.template)
