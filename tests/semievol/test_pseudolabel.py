"""Pseudo-labeling end to end on the demo task: real warm-up, real FAISS and MiniLM, hf backend."""

import json
import os
import shutil
import signal
import sys

import numpy as np
import pytest
from conftest import BIN, EPOCHS, FAST_TRAIN, run_cmd

from semievol_lf.backends.base import SORT_WINDOW

pytestmark = pytest.mark.slow
PY = sys.executable
RECIPE = "recipes/pseudolabel_demo.yaml"
OUT = "saves/tiny/demo/pseudolabel"


def pseudolabel(box, *overrides, check=True, env=None):
    return run_cmd([PY, "-m", "semievol_lf.pseudolabel", RECIPE, *overrides], cwd=box, check=check, env=env)


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


@pytest.fixture(scope="module")
def labeled_box(trained_sandbox):
    """The recipe's own output with majority vote: the tiny model cannot follow the justify prompt."""
    pseudolabel(trained_sandbox, "justify=vote")
    return trained_sandbox


def test_evolve_recipe_trains_on_the_pseudolabel_output(labeled_box):
    stats = json.loads((labeled_box / OUT / "stats.json").read_text())
    assert stats["kept"] > 0
    run_cmd([BIN / "llamafactory-cli", "train", "recipes/evolve_demo.yaml", *FAST_TRAIN], cwd=labeled_box)
    assert (labeled_box / "saves/tiny/demo/evolve/adapter_model.safetensors").is_file()
    log = (labeled_box / "saves/tiny/demo/evolve/trainer_log.jsonl").read_text()
    n_labeled = len(json.loads((labeled_box / "data/demo/labeled.json").read_text()))
    # LlamaFactory saw labeled + selected rows: steps of batch 8 over both, for EPOCHS epochs.
    steps = json.loads(log.splitlines()[-1])["total_steps"]
    assert steps == EPOCHS * -(-(n_labeled + stats["kept"]) // 8)


def test_kept_count_is_the_percentile_rule(labeled_box):
    stats = json.loads((labeled_box / OUT / "stats.json").read_text())
    rows = read_jsonl(labeled_box / OUT / "candidates.jsonl")
    h = [r["entropy"] for r in rows if r["pseudo_answer"] != "[no answer]"]
    tau = np.percentile(h, 50)
    assert stats["tau"] == pytest.approx(tau)
    assert stats["kept"] == sum(x <= tau for x in h) == sum(r["kept"] for r in rows)
    selected = json.loads((labeled_box / OUT / "selected.json").read_text())
    assert len(selected) == stats["kept"]
    by_id = {r["id"]: r for r in rows}
    for row in selected:  # each selected row trains on its pseudo answer, in the task's SFT format
        assert row["output"] == f"Answer: {by_id[row['id']]['pseudo_answer']}"
    # n samples each, no justify calls (vote), one scoring pass per extractable pseudo-answer
    assert stats["model_calls_per_sample"] == pytest.approx(4 + len(h) / len(rows), abs=1e-3)


def test_entropies_match_an_independent_forward_pass(labeled_box):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from semievol_lf.data.loading import load_prepared_split
    from semievol_lf.data.prompts import task_prompt
    from semievol_lf.data.tasks import get_task
    from semievol_lf.llamafactory.chat_format import ChatFormat

    task = get_task("demo")
    base = AutoModelForCausalLM.from_pretrained(labeled_box / ".cache/tiny-llama")
    model = PeftModel.from_pretrained(base, labeled_box / "saves/tiny/demo/warmup").eval()
    chat = ChatFormat(str(labeled_box / ".cache/tiny-llama"), "default")
    unlabeled = {e.uid: e for e in load_prepared_split(labeled_box / "data/demo", task, "unlabeled")}
    rows = [r for r in read_jsonl(labeled_box / OUT / "candidates.jsonl") if r["entropy"] is not None]
    for r in rows[:10]:
        prompt, response = chat.encode(task_prompt(task, unlabeled[r["id"]]), f"Answer: {r['pseudo_answer']}")
        ids = torch.tensor([list(prompt) + list(response)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
        nll = -np.mean([logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(response)])
        assert r["entropy"] == pytest.approx(nll, abs=1e-4)


def test_adapter_toggle_changes_the_model(trained_sandbox):
    from semievol_lf.backends import GenerationRequest, ScoreRequest, load_backend
    from semievol_lf.llamafactory.chat_format import ChatFormat

    path = str(trained_sandbox / ".cache/tiny-llama")
    chat = ChatFormat(path, "default")
    backend = load_backend("hf", path, str(trained_sandbox / "saves/tiny/demo/warmup"), stop_ids=chat.stop_ids,
                           decode=chat.decode)
    prompts = [chat.prompt_ids(f"Sentiment of: word{i}\nA. negative\nB. neutral\nC. positive") for i in range(4)]
    on = backend.generate([GenerationRequest(p, adapter=True, seed=0, temperature=0, max_new_tokens=6)
                           for p in prompts])
    off = backend.generate([GenerationRequest(p, adapter=False, seed=0, temperature=0, max_new_tokens=6)
                            for p in prompts])
    assert [g.text for g in on] != [g.text for g in off]
    assert all(g.text.startswith("Answer:") for g in on)  # the warm-up taught the format
    p, r = chat.encode("Sentiment of: x", "Answer: A")
    s_on, s_off = backend.score([ScoreRequest(p, r, True), ScoreRequest(p, r, False)])
    assert max(abs(a - b) for a, b in zip(s_on, s_off)) > 1e-3
    # A request's sample does not depend on its batch neighbours.
    sampled = [GenerationRequest(p, adapter=True, seed=7, temperature=1.0, max_new_tokens=6) for p in prompts]
    assert backend.generate(sampled)[2] == backend.generate(sampled[2:3])[0]


def test_planted_unlabeled_answers_cannot_influence_outputs(labeled_box):
    data = labeled_box / "data/demo"
    outputs = []
    for planted in ("A", "C"):
        box_data = labeled_box / f"data/planted_{planted}"
        shutil.copytree(data, box_data, dirs_exist_ok=True)
        rows = json.loads((data / "unlabeled.json").read_text())
        for row in rows:
            row["answer"], row["output"] = planted, f"Answer: {planted}"
        (box_data / "unlabeled.json").write_text(json.dumps(rows))
        out = f"saves/planted_{planted}"
        pseudolabel(labeled_box, "justify=vote", f"data_dir={box_data}", f"output_dir={out}")
        outputs.append([(labeled_box / out / f).read_text() for f in ("candidates.jsonl", "selected.json")])
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == (labeled_box / OUT / "candidates.jsonl").read_text()  # = the clean run


def test_killed_run_resumes_to_the_same_selection(labeled_box):
    out = labeled_box / "saves/killed"
    cmd = [PY, "-m", "semievol_lf.pseudolabel", RECIPE, "justify=vote", f"output_dir={out}", "batch_size=8"]
    cache = out / "cache" / "collaborate.jsonl"
    killed = run_cmd(cmd, cwd=labeled_box, check=False, env={**os.environ, "SEMIEVOL_FAULT": "collaborate:1"})
    assert killed.returncode == -signal.SIGKILL  # `kill -9` right after the first chunk was logged
    assert not (out / "stats.json").exists()
    assert cache.read_text().count("\n") == 8 * SORT_WINDOW  # a chunk: batch_size x the batches sorted together
    run_cmd(cmd, cwd=labeled_box)
    assert (out / "selected.json").read_text() == (labeled_box / OUT / "selected.json").read_text()
    lines = cache.read_text().splitlines()
    assert len(lines) == len({json.loads(line)["key"] for line in lines}) == 96  # nothing computed twice


def test_changed_settings_are_refused_not_mixed(labeled_box):
    proc = pseudolabel(labeled_box, "justify=vote", "max_new_tokens=12", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "holds results made from other inputs (changed: settings)" in proc.stderr
    assert "`overwrite_output_dir=true` to discard them" in proc.stderr
    proc = pseudolabel(labeled_box, "justify=vote", "theta=0.3", check=False)  # read only by the selection
    assert proc.returncode == 2 and "(changed: selection)" in proc.stderr
    assert "redo the final outputs from its cached answers" in proc.stderr


def test_a_new_theta_reselects_from_the_cached_answers(labeled_box):
    """w/o AS (theta 1) after SemiEvol: every request is reused, only the selection is redone."""
    out = labeled_box / "saves/reselect"
    shutil.copytree(labeled_box / OUT, out)
    caches = {p.name: p.read_bytes() for p in (out / "cache").glob("*.jsonl")}
    assert set(caches) == {"collaborate.jsonl", "score.jsonl"}  # vote: no self-justify
    pseudolabel(labeled_box, "justify=vote", "theta=1.0", f"output_dir={out}", "overwrite_output_dir=true",
                env={**os.environ, "SEMIEVOL_FAULT": "collaborate:1"})  # killed if it generated anything
    assert {p.name: p.read_bytes() for p in (out / "cache").glob("*.jsonl")} == caches
    old, new = read_jsonl(labeled_box / OUT / "candidates.jsonl"), read_jsonl(out / "candidates.jsonl")
    assert [(r["id"], r["pseudo_answer"], r["entropy"]) for r in new] == [
        (r["id"], r["pseudo_answer"], r["entropy"]) for r in old]
    extractable = sum(r["pseudo_answer"] != "[no answer]" for r in new)
    assert json.loads((out / "stats.json").read_text())["kept"] == extractable > sum(r["kept"] for r in old)
    assert len(json.loads((out / "selected.json").read_text())) == extractable


def test_self_justify_asks_the_warm_model_for_every_sample(labeled_box):
    out = labeled_box / "saves/justify_all"
    pseudolabel(labeled_box, f"output_dir={out}")  # the paper's default: justify all
    stats = json.loads((out / "stats.json").read_text())
    rows = read_jsonl(out / "candidates.jsonl")
    assert all(r["justified"] is not None for r in rows)
    assert len(read_jsonl(out / "cache" / "justify.jsonl")) == len(rows)
    assert stats["dropped_no_answer"] == sum(r["pseudo_answer"] == "[no answer]" for r in rows)
    out2 = labeled_box / "saves/justify_disagreements"
    pseudolabel(labeled_box, "justify=disagreements", f"output_dir={out2}")
    rows2 = read_jsonl(out2 / "candidates.jsonl")
    for r in rows2:
        answers = {c["answer"] for c in r["candidates"]}
        unanimous = len(answers) == 1 and "[no answer]" not in answers
        assert (r["justified"] is None) == unanimous
        if unanimous:
            assert r["pseudo_answer"] == answers.pop()
