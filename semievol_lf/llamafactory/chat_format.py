"""Render prompts into token ids with the LlamaFactory template that the fine-tunes use.

Inference therefore sees exactly the training format: `encode_oneturn` is the function
LlamaFactory's SFT preprocessing calls. Backends receive ids, never text to re-tokenise.

Where LlamaFactory cannot be installed (a vLLM-only environment), export the format once in
the LlamaFactory environment and point `chat_format` at the folder:

    semievol-lf export-chat-format recipes/pseudolabel_mmlu.yaml --out saves/mmlu/chat_format

The export records what the template does to one user turn and one assistant turn (literal
token ids, and text pieces that the content is pasted into before tokenising, as LlamaFactory
does) with the tokenizer LlamaFactory fixed up; `ExportedChatFormat` renders from it with
transformers alone. Export refuses a template whose ids it cannot reproduce on probe prompts, and
stores LlamaFactory's ids of those probes: the vLLM environment's transformers may tokenise
differently, so loading an export renders the probes again and refuses it on any difference.
"""

import importlib.util
import os
from functools import cached_property
from pathlib import Path

from ..errors import UserError
from ..io_utils import atomic_path, atomic_write_json, read_json

FORMAT_FILE = "format.json"
FORMAT_VERSION = 2  # 2: the probes' ids are stored (`probes`) and checked where the export is loaded
PLACEHOLDER = "\u0000semievol:content\u0000"  # stands for the content in exported text pieces

# (prompt, response) pairs every export must reproduce exactly: empty, multi-line, spaces at the
# edges, non-ASCII, text that looks like special tokens, and the shapes this package renders.
PROBES = [
    ("", ""),
    ("What is 2 + 2?", "Answer: B"),
    ("  leading and trailing spaces  ", " Answer: 4 "),
    ("Question: Which one?\nA. first\nB. second\n\nAnswer with the letter.", ""),
    ("Ünïcödé — 数学 ✓\ttab", "Antwort: Ä"),
    ("</s><s><|im_end|> [INST] {{content}} %s {}", "<|eot_id|>"),
]


class _Rendering:
    """What both formats share; subclasses set `tokenizer` and `stop_ids` and define `encode`."""

    def encode(self, prompt: str, response: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def prompt_ids(self, prompt: str) -> tuple[int, ...]:
        return self.encode(prompt)[0]

    @cached_property
    def end_of_turn(self) -> tuple[int, ...]:
        """The ids the template puts after an answer's content (`default`: `</s>` and a newline; llama3:
        `<|eot_id|>`): the fine-tunes train on them and Eq. 6 scores them, so evaluate's entropy counts them
        too. Read as what two answers' ids end with alike (a template may also put ids before the content)."""
        a, b = self.encode("", "A")[1], self.encode("", "B")[1]
        n = 0
        while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
            n += 1
        return tuple(a[len(a) - n:])

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


class ChatFormat(_Rendering):
    """The recipe's LlamaFactory template, applied by LlamaFactory itself."""

    def __init__(self, model_name_or_path: str, template: str):
        from llamafactory.data.template import TEMPLATES, get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments
        from transformers import AutoTokenizer

        if template not in TEMPLATES:
            raise UserError(f"`template`: unknown LlamaFactory template {template!r}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=True)
        except OSError as err:
            raise UserError(
                f"`model_name_or_path`: cannot load a tokenizer from {model_name_or_path!r} ({err})") from None
        self.model_name_or_path = model_name_or_path
        self.template_name = template
        self.template = get_template_and_fix_tokenizer(self.tokenizer, DataArguments(template=template))

    @cached_property
    def stop_ids(self) -> tuple[int, ...]:
        return tuple(self.template.get_stop_token_ids(self.tokenizer))

    def encode(self, prompt: str, response: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(prompt ids, response ids) as the SFT data processor builds them."""
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        prompt_ids, response_ids = self.template.encode_oneturn(self.tokenizer, messages)
        return tuple(prompt_ids), tuple(response_ids)

    def export(self, out: str | os.PathLike) -> Path:
        """Write the folder `ExportedChatFormat` reads; replaces `out` only once it is complete."""
        import llamafactory

        spec = {
            "format_version": FORMAT_VERSION,
            "model_name_or_path": _model_key(self.model_name_or_path),
            "template": self.template_name,
            "llamafactory_version": llamafactory.__version__,
            "placeholder": PLACEHOLDER,
            **self._pieces(),
            "stop_ids": list(self.stop_ids),
            "transformers_version": _transformers_version(),
            # LlamaFactory's own ids of every probe: checked again where the export is loaded
            "probes": [{"prompt": prompt, "response": response, "ids": [list(part) for part in self.encode(
                prompt, response)]} for prompt, response in PROBES],
        }
        out = Path(out)
        with atomic_path(out, directory=True) as tmp:
            self.tokenizer.save_pretrained(tmp)
            exported = ExportedChatFormat(tmp, spec)
            for prompt, response in PROBES:
                if exported.encode(prompt, response) != self.encode(prompt, response):
                    raise UserError(f"template {self.template_name!r} renders ({prompt!r}, {response!r}) in a way "
                                    "the export cannot reproduce; run the step where LlamaFactory is installed")
            atomic_write_json(tmp / FORMAT_FILE, spec)  # written last: its presence means the export is whole
        return out

    def _pieces(self) -> dict[str, list[dict]]:
        """Record the elements LlamaFactory tokenises for each turn, with the placeholder as content."""
        template = self.template
        convert = template._convert_elements_to_ids
        recorded: list[list] = []

        def record(tokenizer, elements):
            recorded.append(list(elements))
            return convert(tokenizer, elements)

        template._convert_elements_to_ids = record  # an instance attribute shadows the method
        try:
            prompt_ids, response_ids = self.encode(PLACEHOLDER, PLACEHOLDER)
        finally:
            del template._convert_elements_to_ids
        if len(recorded) != 2:
            raise UserError(f"template {self.template_name!r} encodes one turn in {len(recorded)} parts; "
                            "it cannot be exported, run the step where LlamaFactory is installed")
        pieces = {}
        for turn, elements in zip(("prompt", "response"), recorded):
            pieces[turn] = []
            for elem in elements:
                if isinstance(elem, str):
                    if elem:
                        pieces[turn].append({"text": elem})
                else:  # a special token by name ({"token": ...}) or {"bos_token"} / {"eos_token"}
                    pieces[turn].append({"ids": convert(self.tokenizer, [elem])})
        # Ids a template adds around the tokenised turns (e.g. the empty thought of reasoning templates);
        # anything else it does differently fails the probes in `export`.
        rendered = ExportedChatFormat.render(self.tokenizer, pieces["prompt"], PLACEHOLDER, PLACEHOLDER)
        if len(prompt_ids) > len(rendered) and prompt_ids[:len(rendered)] == rendered:
            pieces["prompt"].append({"ids": list(prompt_ids[len(rendered):])})
        rendered = ExportedChatFormat.render(self.tokenizer, pieces["response"], PLACEHOLDER, PLACEHOLDER)
        n = len(response_ids) - len(rendered)
        if n > 0 and response_ids[n:] == rendered:
            pieces["response"].insert(0, {"ids": list(response_ids[:n])})
        return pieces


class ExportedChatFormat(_Rendering):
    """A template exported by `ChatFormat.export`, rendered without LlamaFactory."""

    def __init__(self, folder: str | os.PathLike, spec: dict | None = None):
        from transformers import AutoTokenizer

        folder = Path(folder)
        if spec is None:
            if not (folder / FORMAT_FILE).is_file():
                raise UserError(f"`chat_format`: {folder} holds no {FORMAT_FILE}; write it with "
                                "`semievol-lf export-chat-format RECIPE --out FOLDER` where LlamaFactory is installed")
            spec = read_json(folder / FORMAT_FILE)
            if spec.get("format_version") != FORMAT_VERSION:
                raise UserError(f"`chat_format`: {folder} was exported by another version of semievol-lf; export again")
        self.spec = spec
        self.folder = folder
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.stop_ids = tuple(spec["stop_ids"])
        if "probes" in spec:  # absent only while `export` builds the spec (it checks the probes itself)
            self.check_probes()

    def check_probes(self) -> None:
        """Render the stored probes here; any id that differs from LlamaFactory's at export is a UserError
        (this environment's tokenizer is another transformers or tokenizers version)."""
        for probe in self.spec["probes"]:
            got = [list(part) for part in self.encode(probe["prompt"], probe["response"])]
            if got != probe["ids"]:
                part = 0 if got[0] != probe["ids"][0] else 1
                stored, mine = probe["ids"][part], got[part]
                at = next((i for i, (a, b) in enumerate(zip(stored, mine)) if a != b), min(len(stored), len(mine)))
                raise UserError(
                    f"`chat_format`: {self.folder}: this environment renders the probe "
                    f"{(probe['prompt'], probe['response'])!r} differently from LlamaFactory at export: "
                    f"{'prompt' if part == 0 else 'response'} ids differ from position {at} "
                    f"({stored[at:at + 4]} exported, {mine[at:at + 4]} here); exported with transformers "
                    f"{self.spec.get('transformers_version')}, this is {_transformers_version()}. Install the "
                    "exporting environment's transformers and tokenizers versions here, or run the step where "
                    "LlamaFactory is installed")

    @staticmethod
    def render(tokenizer, pieces: list[dict], placeholder: str, content: str) -> tuple[int, ...]:
        ids: list[int] = []
        for piece in pieces:
            if "ids" in piece:
                ids += piece["ids"]
            else:  # pasted then tokenised as one string, as LlamaFactory's StringFormatter does
                ids += tokenizer.encode(piece["text"].replace(placeholder, content), add_special_tokens=False)
        return tuple(ids)

    def encode(self, prompt: str, response: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
        placeholder = self.spec["placeholder"]
        return (self.render(self.tokenizer, self.spec["prompt"], placeholder, prompt),
                self.render(self.tokenizer, self.spec["response"], placeholder, response))

    def check_matches(self, model_name_or_path: str, template: str) -> None:
        """The export must be of the recipe's template and model (its tokenizer is the model's)."""
        for key, mine, theirs in [
                ("template", template, self.spec["template"]),
                ("model_name_or_path", _model_key(model_name_or_path), self.spec["model_name_or_path"])]:
            if mine != theirs:
                raise UserError(f"`chat_format`: {self.folder} was exported for {key} {theirs!r}, but the recipe's "
                                f"`{key}` is {mine!r}; export it again from this recipe")


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _model_key(model_name_or_path: str) -> str:
    """A local model by its absolute path (recipes name it relatively), a hub model by its name."""
    path = Path(model_name_or_path).expanduser()
    return str(path.resolve()) if path.exists() else model_name_or_path


def open_chat_format(cfg) -> _Rendering:
    """The recipe's format: from `chat_format` when set, else from LlamaFactory (which must be installed)."""
    if cfg.chat_format:
        chat = ExportedChatFormat(cfg.chat_format)
        chat.check_matches(cfg.model_name_or_path, cfg.template)
        return chat
    if importlib.util.find_spec("llamafactory") is None:
        raise UserError(f"LlamaFactory is not installed in this environment, so template {cfg.template!r} cannot be "
                        "applied here. Where LlamaFactory is installed, run `semievol-lf export-chat-format RECIPE "
                        "--out FOLDER`, then add `chat_format=FOLDER` to this command")
    return ChatFormat(cfg.model_name_or_path, cfg.template)


def export_main(argv: list[str]) -> Path:
    """`semievol-lf export-chat-format RECIPE.yaml [key=value ...] --out FOLDER`."""
    from ..config import ModelArguments, read_args
    from ..config.parser import format_fields, wants_help

    if wants_help(argv):
        fields = format_fields(ModelArguments, only={"model_name_or_path", "template"})
        print("usage: semievol-lf export-chat-format RECIPE.yaml [key=value ...] --out FOLDER\n\n"
              "Export the recipe's LlamaFactory template (rendered with the model's tokenizer) to FOLDER, for\n"
              "`chat_format=FOLDER` where LlamaFactory is not installed. Reads these keys of any recipe:\n"
              + "\n".join(fields) + "\n  --out FOLDER\n      Where the export is written.")
        raise SystemExit(0)
    argv = [a for arg in argv for a in (arg.split("=", 1) if arg.startswith("--out=") else [arg])]
    if "--out" not in argv or argv.index("--out") + 1 >= len(argv):
        raise UserError("usage: semievol-lf export-chat-format RECIPE.yaml [key=value ...] --out FOLDER")
    i = argv.index("--out")
    out, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    values, _ = read_args(argv)
    for key in ("model_name_or_path", "template"):
        if not values.get(key):
            raise UserError(f"{argv[0]}: `{key}` is not set")
    out = ChatFormat(str(values["model_name_or_path"]), str(values["template"])).export(out)
    print(f"chat format of {values['model_name_or_path']} with template {values['template']!r} in {out}; "
          f"use it where LlamaFactory is not installed with `chat_format={out}`")
    return out
