"""METEOR's teacher and judge over a real `vllm serve` (`teacher: {kind: openai, ...}`).

Runs in the vLLM venv (`make test-vllm`); the METEOR run itself (LlamaFactory, the student on the hf
backend) runs in the main venv's python (lane.MAIN_PYTHON). One server of SmolLM2-135M-Instruct is the
teacher and the judge; the run stops after stage 1 (guidelines -> distill -> the with/without-guidelines
data-quality judging), is killed (SIGKILL) right after the teacher's no-guideline answers are cached,
and resumed: the tests read back what the served model wrote and what the resume reused. The judge is
served with `continue_final_message` (it continues the JSON list's start, as the local judge does), and at
least one of its judgments must be readable.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs the vLLM venv: bash scripts/make_vllm_env.sh")

from lane import MAIN_PYTHON, REPO, Server  # noqa: E402

from semievol_lf.io_utils import read_json, read_jsonl  # noqa: E402
from semievol_lf.meteor.judge import summarize  # noqa: E402
from semievol_lf.meteor.quality import WITH, WITHOUT  # noqa: E402

SMOLLM2 = REPO / ".cache" / "smollm2-135m"
N_QUESTIONS, N_QUALITY = 4, 2
FAULT = "quality/cache/plain:1"  # killed right after the teacher's no-guideline answers are cached


def _endpoint(url: str, tokens: int, continued: bool = False) -> str:
    return (f"{{kind: openai, model: '{SMOLLM2}', base_url: '{url}', api_key_env: null, max_new_tokens: {tokens}, "
            f"continue_final_message: {str(continued).lower()}}}")


def _run(cmd: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("SEMIEVOL_FAULT", None)
    if fault:
        env["SEMIEVOL_FAULT"] = fault
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    if not Path(MAIN_PYTHON).exists():
        pytest.skip(f"the model build and the METEOR command need the LlamaFactory venv ({MAIN_PYTHON})")
    if not (SMOLLM2 / "config.json").is_file():  # built once, offline, from the packaged GGUF file
        subprocess.run([Path(MAIN_PYTHON).parent / "semievol-lf", "model", "build", "smollm2-135m"], cwd=REPO,
                       check=True, capture_output=True)
    tmp = tmp_path_factory.mktemp("meteor-vllm")
    server = Server(str(SMOLLM2), None, tmp, max_model_len=1024)
    server.start()
    try:
        out = tmp / "run"
        cmd = [MAIN_PYTHON, "-m", "semievol_lf.cli", "meteor", "run", str(REPO / "recipes" / "meteor_demo.yaml"),
               f"output_dir={out}", f"teacher={_endpoint(server.url, 48)}",
               f"judge={_endpoint(server.url, 120, continued=True)}",
               f"n_questions={N_QUESTIONS}", "n_test=2", f"quality_questions={N_QUALITY}", "max_new_tokens=32",
               "stop_after=distill"]
        killed = _run(cmd, FAULT)
        assert killed.returncode == -9 and f"SEMIEVOL_FAULT={FAULT}" in killed.stderr, killed.stderr[-3000:]
        plain_before = [r["key"] for r in read_jsonl(out / "quality" / "cache" / "plain.jsonl")]
        assert not (out / "quality" / "results.json").exists()
        resumed = _run(cmd)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        again = _run(cmd)
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        server.kill()
    return {"dir": out, "plain_before": plain_before, "resumed": resumed.stdout + resumed.stderr,
            "again": again.stdout + again.stderr}


def _cache(folder: Path, stage: str) -> dict:
    rows = list(read_jsonl(folder / "cache" / f"{stage}.jsonl"))
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), f"{stage}: a request was computed twice"
    return {r["key"]: r["text"] for r in rows}


def _is_text(s: str) -> bool:
    return len(s.split()) >= 3 and sum(c.isalpha() for c in s) > len(s) / 2


def test_the_served_teacher_writes_the_distillation_data(served_run):
    d = served_run["dir"]
    teacher = _cache(d / "distill", "teacher")
    domain = read_json(d / "questions.json")["domain"]
    assert set(teacher) == {q["uid"] for q in domain} and len(teacher) == N_QUESTIONS
    rows = read_json(d / "distill" / "sft.json")
    assert rows and all(row["output"] == teacher[row["id"]] for row in rows)
    assert sum(_is_text(t) for t in teacher.values()) >= N_QUESTIONS - 1, teacher  # real answers, not noise
    print("teacher (served):", json.dumps(next(iter(teacher.values())))[:300])


def test_the_served_judge_scores_both_answer_sets_readably_and_the_table_recounts(served_run):
    """Both answers to a question in one prompt; the served judge continues `[{"answer": 1, "accuracy": ` and
    keeps the JSON form at least once; every judgment is counted, readable or not."""
    from semievol_lf.meteor.judge import PREFILL, parse_judgment

    d = served_run["dir"]
    plain = _cache(d / "quality", "plain")
    teacher = _cache(d / "distill", "teacher")
    judged = _cache(d / "quality", "judge")
    rows = list(read_jsonl(d / "quality" / "scores.jsonl"))
    assert len(plain) == N_QUALITY and all(_is_text(t) for t in plain.values()), plain
    assert len(rows) == N_QUALITY and all(j.startswith(PREFILL.strip()) for j in judged.values()), judged
    for row in rows:  # the with-guideline answers are stage 1b's, not asked again
        assert row["answers"] == {WITH: teacher[row["id"]], WITHOUT: plain[row["id"]]}
        assert (parse_judgment(row["judgments"][-1], 2)[0] is None) == (row["scores"] is None)
    results = read_json(d / "quality" / "results.json")
    assert results == json.loads(json.dumps(summarize(rows, [WITH, WITHOUT], 42)))  # the demo recipe's seed
    assert results["readable"] >= 1, [r["judgments"] for r in rows]
    print("quality (served judge):", results["readable"], "readable of", N_QUALITY, json.dumps(results["scores"]))


def test_the_resume_reuses_the_served_answers(served_run):
    d = served_run["dir"]
    assert served_run["plain_before"] and list(_cache(d / "quality", "plain")) == served_run["plain_before"]
    out = served_run["resumed"]
    assert "guidelines: finished before, skipped" in out and "distill: finished before, skipped" in out
    again = served_run["again"]
    for step in ("guidelines", "distill", "quality"):
        assert f"{step}: finished before, skipped" in again
    assert "computed" not in again
