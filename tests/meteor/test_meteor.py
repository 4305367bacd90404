"""METEOR (semievol_lf/meteor): the pure logic, the checks that come before any model loads, and one real
end-to-end run of recipes/meteor_demo.yaml (SmolLM2-135M-Instruct as student, teacher and judge, real
LlamaFactory SFT and DPO) whose data the tests read back: killed once mid-refinement and resumed."""

import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cmd
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from semievol_lf.config import build_config
from semievol_lf.errors import UserError
from semievol_lf.io_utils import read_json, read_jsonl
from semievol_lf.meteor.chat import ChatRequest, EndpointChat, preflight
from semievol_lf.meteor.config import ChatModelArguments, MeteorArguments
from semievol_lf.meteor.judge import parse_scores, summarize
from semievol_lf.meteor.preferences import best_of
from semievol_lf.meteor.questions import demo_questions, load_questions, split_questions
from semievol_lf.meteor.refine import feedback_of, parse_verdict, rounds_due

CLI = Path(sys.executable).with_name("semievol-lf")


# ---------------------------------------------------------------------------------------------- pure logic

# hand-written teacher replies: only a clean first line `VERDICT: CORRECT` accepts an answer
@pytest.mark.parametrize("text, verdict", [
    ("VERDICT: CORRECT", "correct"), ("VERDICT: CORRECT.", "correct"), ("verdict: correct", "correct"),
    ("**VERDICT: CORRECT**", "correct"), ("**Verdict:** Correct", "correct"), ("## VERDICT: `CORRECT`", "correct"),
    ("\n\n  VERDICT:CORRECT  \n", "correct"), ("VERDICT: CORRECT\n\nThe answer is correct.", "correct"),
    ("<think>Is it right? Dropout... yes.\nVERDICT: INCORRECT? no</think>\nVERDICT: CORRECT", "correct"),
    ("<THINK>\nhmm\n</THINK>VERDICT: CORRECT", "correct"),
    ("the reasoning, its opening tag in the prompt</think>\n\nVERDICT: CORRECT", "correct"),
    ("VERDICT: INCORRECT\nYou missed regularization.", "incorrect"), ("**Verdict: incorrect**", "incorrect"),
    ("VERDICT: INCORRECT - see dropout", "incorrect"), ("<think>x</think>VERDICT: INCORRECT\nHint: ...", "incorrect"),
    # the hedged replies of issue 22, old style and in the new format
    ("The answer is generally correct; however, there are some issues.", "unreadable"),
    ("Mostly correct, but it misses the bias term.", "unreadable"), ("This is not quite correct.", "unreadable"),
    ("Almost correct, but incomplete.", "unreadable"), ("Correct.", "unreadable"), ("Incorrect.", "unreadable"),
    ("Evaluation:\n\nCorrect.", "unreadable"), ("<think>...</think>Correct.", "unreadable"),
    ("VERDICT: MOSTLY CORRECT", "unreadable"), ("VERDICT: NOT CORRECT", "unreadable"),
    ("VERDICT: PARTIALLY CORRECT\nIt misses X.", "unreadable"), ("VERDICT: CORRECT, but incomplete", "unreadable"),
    ("VERDICT: CORRECT (mostly)", "unreadable"), ("VERDICT: CORRECT-ish", "unreadable"),
    ("VERDICT: CORRECT\nMostly, though it misses the bias term.", "unreadable"),
    ("VERDICT: CORRECT\nHowever, there are some issues.", "unreadable"),
    # hostile: a verdict buried after text, both verdicts, an unclosed reasoning block, the template echoed
    ("Evaluation:\n\nVERDICT: CORRECT", "unreadable"), ("The student is wrong.\nVERDICT: CORRECT", "unreadable"),
    ("Let me check. VERDICT: CORRECT", "unreadable"), ("VERDICT: CORRECT / INCORRECT", "unreadable"),
    ("VERDICT: CORRECT\nVERDICT: INCORRECT", "unreadable"), ("VERDICT: CORRECT or VERDICT: INCORRECT", "unreadable"),
    ("<think>the answer is fine, VERDICT: CORRECT", "unreadable"), ("VERDICT:", "unreadable"),
    ("VERDICT: CORRECTNESS is hard to judge", "unreadable"), ("VERDICT: ✓", "unreadable"),
    ("", "unreadable"), ("   \n ", "unreadable"), ("Great answer", "unreadable")])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


HEDGES = ["generally correct", "mostly correct", "partially correct", "almost correct", "not quite correct",
          "largely correct", "somewhat correct", "correct but incomplete", "correct, however", "nearly correct",
          "not entirely correct", "correct with minor issues", "correct, but there are some errors"]


@settings(max_examples=300, deadline=None)
@given(hedge=st.sampled_from(HEDGES), where=st.sampled_from(["verdict", "body", "bare"]),
       case=st.sampled_from([str.lower, str.upper, str.title, str]), bold=st.booleans(), think=st.booleans(),
       tail=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_a_hedged_verdict_is_never_correct(hedge, where, case, bold, think, tail):
    """A hedge in the verdict line, after a clean CORRECT line, or as the old free-text start: never accepted."""
    hedge = case(hedge)
    line = {"verdict": f"VERDICT: {hedge}", "body": "VERDICT: CORRECT", "bare": hedge.capitalize()}[where]
    text = (f"**{line}**" if bold else line) + ("\n" + hedge + ". " + tail if where == "body" else tail)
    if think:
        text = "<think>VERDICT: CORRECT</think>\n" + text
    assert parse_verdict(text) != "correct"


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(min_size=1, max_size=30).filter(lambda t: re.sub(r"[\s*_`#>]", "", t)),
       case=st.sampled_from([str.lower, str.upper, str.title]))
def test_a_verdict_buried_after_any_text_is_unreadable(prefix, case):
    """Whatever comes before the verdict line (outside a leading reasoning block) makes the reply unreadable."""
    assume("</think>" not in prefix.lower() and not re.fullmatch(r"(?is)\W*verdict\W*:?\W*(in)?correct\W*", prefix))
    text = prefix + "\n" + case("VERDICT: CORRECT")
    assert parse_verdict(text) == "unreadable" or parse_verdict(prefix) == "incorrect"


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from([str.lower, str.upper, str.title, str]), bold=st.sampled_from(["", "**", "__", "`"]),
       think=st.text(max_size=60).filter(lambda t: "</think>" not in t.lower()),
       blank=st.sampled_from(["", "\n", "\n\n "]))
def test_a_clean_verdict_reads_in_any_case_emphasis_or_after_a_reasoning_block(case, bold, think, blank):
    for word, verdict in (("CORRECT", "correct"), ("INCORRECT", "incorrect")):
        line = f"{bold}{case('VERDICT: ' + word)}{bold}"
        assert parse_verdict(f"<think>{think}</think>{blank}{line}") == verdict
        assert parse_verdict(blank + line + ("\nMissing: X" if verdict == "incorrect" else "")) == verdict


def test_the_student_revises_from_the_feedback_without_the_verdict_line():
    assert feedback_of("VERDICT: INCORRECT\nMention dropout.") == "Mention dropout."
    assert feedback_of("<think>x</think>**VERDICT: INCORRECT**\n\nHint: L2.") == "Hint: L2."
    assert feedback_of("Mostly correct, but see X.") == "Mostly correct, but see X."  # unreadable: shown whole
    assert feedback_of("VERDICT: INCORRECT") == "VERDICT: INCORRECT"


def test_rounds_due_one_per_interval():
    assert rounds_due(10, 0, 10) == [1] and rounds_due(9, 0, 10) == [] and rounds_due(25, 1, 10) == [2]
    assert rounds_due(20, 0, 10) == [1, 2] and rounds_due(20, 2, 10) == []


def test_best_of_picks_the_highest_non_empty():
    assert best_of(["a", "b", ""], [-2.0, -1.0, 0.0]) == 1
    assert best_of(["a", "b"], [-1.0, -1.0]) == 0 and best_of(["", ""], [0.0, 0.0]) == -1


FULL = "Accuracy: 8\nCompleteness: 7/10\nRelevance: 9\nCoherence: 8\nReliability: 6\nOverall: 7.5"
SIX = {"accuracy": 8, "completeness": 7, "relevance": 9, "coherence": 8, "reliability": 6, "overall": 7.5}


@pytest.mark.parametrize("text, scores", [
    (FULL, SIX), (FULL + "\nAccuracy: 8 (repeated, same value)", SIX),
    ("**Accuracy:** 8\n**Completeness**: 7\n| Relevance | 9 |\nCoherence = 8\nReliability - 6\nOverall: 7.5 / 10.",
     SIX), ("Overall, a good answer.\n" + FULL + "\nJustification: clear.", SIX),
    ("accuracy: 10 completeness: 1 relevance: 10 coherence: 10 reliability: 10 overall: 10",
     {**dict.fromkeys(SIX, 10.0), "completeness": 1.0}),
    # hostile or broken judgments: never a score
    ("Great answer!", None), ("", None), ("Accuracy: 8, Overall: 7", None), (FULL.replace("9", "11"), None),
    (FULL.replace("9", "N"), None),  # the template echoed
    ("Accuracy: N\nCompleteness: N\nRelevance: N\nCoherence: N\nReliability: N\nOverall: N", None),
    (FULL.replace("Accuracy: 8", "Accuracy: 0"), None), (FULL.replace("Accuracy: 8", "Accuracy: -8"), None),
    (FULL.replace("Accuracy: 8", "Accuracy: 8-9"), None), (FULL.replace("7/10", "3/5"), None),
    (FULL.replace("Accuracy: 8", "Accuracy: 80"), None), (FULL.replace("7/10", "7/100"), None),
    (FULL + "\nAccuracy: 3", None),  # two different values for one criterion
    ("Accuracy: eight\n" + FULL.split("\n", 1)[1], None)])
def test_parse_scores_reads_hand_written_judgments(text, scores):
    assert parse_scores(text) == scores


def test_unreadable_judgments_are_counted_and_shown_never_scored():
    from semievol_lf.meteor.report import judge_table

    rows = [{"id": "1", "model": "a", "scores": parse_scores(FULL)},
            {"id": "2", "model": "a", "scores": parse_scores("Accuracy: N ... Overall: N")}]
    out = summarize(rows, ["a"])
    assert out["scores"]["a"]["valid"] == 1 and out["scores"]["a"]["n"] == 2 and out["scores"]["a"]["overall"] == 7.5
    assert judge_table(out)[1][0][-1] == "1/2"


def test_win_rates():
    low = dict.fromkeys(("accuracy", "completeness", "relevance", "coherence", "reliability", "overall"), 5.0)
    rows = [{"id": "1", "model": "a", "scores": {**low, "accuracy": 9.0}}, {"id": "1", "model": "b", "scores": low},
            {"id": "2", "model": "a", "scores": low}, {"id": "2", "model": "b", "scores": low},
            {"id": "3", "model": "a", "scores": None}, {"id": "3", "model": "b", "scores": low}]
    out = summarize(rows, ["a", "b"])
    assert out["scores"]["a"]["valid"] == 2 and out["scores"]["a"]["n"] == 3 and out["scores"]["a"]["accuracy"] == 7.0
    assert out["win_rate"]["compared"] == 2 and out["win_rate"]["accuracy"] == {"a": 0.75, "b": 0.25}
    assert out["win_rate"]["overall"] == {"a": 0.5, "b": 0.5}


# ---------------------------------------------------------------------------------------------- inputs

def test_questions_file_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "q.jsonl"
    cases = [('{"question": "a"}\n{"question": ""}\n', r"q.jsonl:2: question: missing or empty"),
             ('{"question": "a"}\n{oops\n', r"q.jsonl:2: not valid JSON"),
             ('{"question": "a", "answer": "b"}\n', r"q.jsonl:1: unknown field `answer`"),
             ('{"id": 1, "question": "a"}\n{"id": "1", "question": "b"}\n', r"q.jsonl:2: id: '1' repeats line 1"),
             ('{"question": "a", "category": 3}\n', r"q.jsonl:1: category: must be a non-empty string")]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            load_questions(path)
    path.write_text('{"question": " What is dropout? ", "category": "DL"}\n\n{"id": "x", "question": "b"}\n')
    assert [(q.uid, q.question, q.category) for q in load_questions(path)] == [
        ("q1", "What is dropout?", "DL"), ("x", "b", None)]


def test_demo_questions_and_split():
    questions = demo_questions()
    assert len({q.uid for q in questions}) == len(questions) == 48
    assert [q.category for q in questions[:4]] == ["ML", "DL", "NLP", "CV"]
    domain, test = split_questions(questions, 3, 8)
    assert len(domain) == 8 and test == questions[-3:] and not {q.uid for q in domain} & {q.uid for q in test}
    with pytest.raises(UserError, match="`n_test`=48 leaves no domain questions"):
        split_questions(questions, 48, None)


def test_config_errors_name_the_key():
    with pytest.raises(UserError, match=r"`teacher.kindd`: unknown key.*Did you mean `kind`"):
        build_config(MeteorArguments, {"teacher": {"kindd": "openai"}})
    with pytest.raises(UserError, match=r"`teacher`: `model` is required for kind openai"):
        build_config(MeteorArguments, {"teacher": {"kind": "openai"}})
    with pytest.raises(UserError, match=r"`student`: unknown preset 'smollm3'"):
        build_config(MeteorArguments, {"student": "smollm3", "teacher": {"preset": "smollm2-135m"}})
    with pytest.raises(UserError, match=r"`teacher.kind: vllm` with the student on `backend: vllm` would put two vLLM"):
        build_config(MeteorArguments, {"backend": "vllm", "teacher": {"kind": "vllm", "preset": "smollm2-135m"}})
    with pytest.raises(UserError, match=r"`judge.kind: vllm` with the student on `backend: vllm`"):
        build_config(MeteorArguments, {"backend": "vllm", "teacher": {"kind": "openai", "model": "m"},
                                       "judge": {"kind": "vllm", "preset": "smollm2-135m"}})
    build_config(MeteorArguments, {"backend": "hf", "teacher": {"kind": "vllm", "preset": "smollm2-135m"}})
    cfg = build_config(MeteorArguments, {"teacher": {"kind": "openai", "model": "gpt-4o"}})
    assert cfg.judge_args == cfg.teacher_args  # the judge defaults to the teacher


@pytest.mark.parametrize("old, new", [("meteor_dir", "output_dir"), ("k", "num_samples"),
                                      ("max_iterations", "max_revisions")])
def test_a_renamed_key_is_one_error_naming_its_new_name(tmp_path, old, new):
    """METEOR's `k` and `max_iterations` were renamed so that `k` (ICP neighbours) and `iterations`
    (rounds) mean one thing each; its folder is `output_dir` as every command's. Refused before any work."""
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"{old}=3",
                    f"output_dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    assert proc.stderr.splitlines() == [f"error: command line: `{old}` was renamed `{new}`"]
    recipe = tmp_path / "old.yaml"  # the demo recipe as it was written before the rename
    recipe.write_text((ROOT / "recipes" / "meteor_demo.yaml").read_text().replace(f"\n{new}:", f"\n{old}:"))
    line = next(n for n, text in enumerate(recipe.read_text().splitlines(), 1) if text.startswith(f"{old}:"))
    message = f"{recipe}:{line}: `{old}` was renamed `{new}`"
    proc = run_cmd([CLI, "meteor", "run", recipe], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"error: {message}"]
    from semievol_lf.llamafactory.recipes import validate_recipe

    with pytest.raises(UserError, match=re.escape(message)):
        validate_recipe(recipe)


def test_demo_recipe_validates_and_the_dpo_recipe_passes_llamafactorys_parser(tmp_path, smollm2):
    from semievol_lf.llamafactory.recipes import validate_recipe
    from semievol_lf.meteor.preferences import pairwise_entry
    from semievol_lf.meteor.training import dpo_recipe

    assert "ok (meteor, student smollm2-135m, teacher hf)" in validate_recipe(ROOT / "recipes" / "meteor_demo.yaml")
    values = yaml.safe_load((ROOT / "recipes" / "meteor_demo.yaml").read_text())
    cfg = build_config(MeteorArguments, values)
    pairs = [{"instruction": "q", "input": "", "chosen": "a", "rejected": "b"}]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"prefs": pairwise_entry("pairs.json")}))
    recipe = dpo_recipe(cfg, tmp_path, "prefs", tmp_path / "dpo", previous=tmp_path / "refined")
    recipe["model_name_or_path"] = str(smollm2)
    (tmp_path / "dpo.yaml").write_text(yaml.safe_dump(recipe))
    assert "ok (dpo, dataset prefs" in validate_recipe(tmp_path / "dpo.yaml")
    assert recipe["ref_model_adapters"] == recipe["adapter_name_or_path"] == str(tmp_path / "refined")


def test_a_prompt_longer_than_the_context_is_one_error_before_the_model_loads(tmp_path, tiny_model):
    """LocalChat checks the prompts still to compute (template and prefill included) against `cutoff_len`;
    a cached one is not checked again, and nothing loads before the check."""
    from semievol_lf.io_utils import JsonlLog
    from semievol_lf.meteor.chat import LocalChat, cached_chat

    chat = LocalChat("hf", str(tiny_model), "default", name="student", cutoff_len=16)
    short, long = ChatRequest("Hi?", 0), ChatRequest("Explain overfitting " * 20, 0)
    log = JsonlLog(tmp_path / "cache" / "x.jsonl")
    with pytest.raises(UserError, match=r"guidelines \(student\): 1 prompt\(s\) are longer than `cutoff_len` "
                                        r"\(16 tokens\), the longest \d+ tokens \(q2\); raise `cutoff_len`"):
        cached_chat(chat, [("q1", short), ("q2", long)], log, "guidelines")
    assert chat._backend is None and not log.load()  # refused before any model loaded or any request ran
    assert len(chat._prompt_ids(long)) > 16 >= len(chat._prompt_ids(short))
    log.append([{"key": "q2", "text": "cached"}])  # as a run with a larger cutoff_len left it
    assert cached_chat(chat, [("q2", long)], log, "guidelines") == {"q2": "cached"} and chat._backend is None
    # the whole run: one error naming the stage, before any model loads
    out = tmp_path / "run"
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={out}", "student=tiny",
                    f"student_model_name_or_path={tiny_model}", "cutoff_len=12", "stop_after=guidelines"],
                   cwd=ROOT, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "guidelines (student): 8 prompt(s) are longer than `cutoff_len` (12 tokens)" in proc.stderr
    assert not (out / "guidelines" / "guidelines.jsonl").exists()


# ---------------------------------------------------------------------------------------------- endpoints

def test_missing_api_key_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("METEOR_TEST_KEY", raising=False)
    args = ChatModelArguments(kind="openai", model="gpt-4o", api_key_env="METEOR_TEST_KEY")
    with pytest.raises(UserError, match=r"`teacher.api_key_env`: the environment variable METEOR_TEST_KEY is not set"):
        preflight(args, "teacher")
    # the whole command: exit 2 with one error line, nothing written
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={tmp_path / 'run'}",
                    "teacher={kind: openai, model: gpt-4o, api_key_env: METEOR_TEST_KEY}"], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "METEOR_TEST_KEY is not set" in proc.stderr and not (tmp_path / "run").exists()


def test_a_teacher_that_stays_down_is_refused_before_any_work(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = (f"teacher={{kind: openai, model: m, base_url: 'http://127.0.0.1:{port}/v1', api_key_env: null, "
               "max_retries: 2, backoff: 0.01}")
    start = time.monotonic()
    proc = run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={tmp_path / 'run'}",
                    teacher], cwd=tmp_path, check=False)
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    assert f"teacher at http://127.0.0.1:{port}/v1 unreachable after 3 tries" in proc.stderr
    assert time.monotonic() - start < 60


class _StubChat(BaseHTTPRequestHandler):
    """A hosted chat API cannot run here: this answers /v1/models and /v1/chat/completions as one does,
    failing the first completion with 503 (retried), and records the requests."""

    seen: list = []
    fail_first = [True]

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"data": [{"id": "teacher-model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.headers.get("Authorization"), body))
        if self.fail_first[0]:
            self.fail_first[0] = False
            return self._send(503, {"error": {"message": "overloaded"}})
        self._send(200, {"choices": [{"message": {"role": "assistant",
                                                  "content": " echo: " + body["messages"][0]["content"]}}]})


def test_endpoint_chat_protocol_key_and_retries(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("METEOR_TEST_KEY", "sk-test")
        args = ChatModelArguments(kind="openai", model="teacher-model", api_key_env="METEOR_TEST_KEY",
                                  base_url=f"http://127.0.0.1:{server.server_port}/v1", backoff=0.01)
        preflight(args, "teacher")
        chat = EndpointChat(args)
        try:
            out = chat.generate([ChatRequest("q1", seed=1, max_new_tokens=5), ChatRequest("q2", seed=2)])
        finally:
            chat.close()
        assert sorted(out) == ["echo: q1", "echo: q2"] and out[0] == "echo: q1"
        auth, body = _StubChat.seen[-1]
        assert auth == "Bearer sk-test" and body["model"] == "teacher-model" and body["messages"][0]["role"] == "user"
        assert len(_StubChat.seen) == 3  # one 503, retried
        with pytest.raises(UserError, match="does not serve 'other'"):
            preflight(ChatModelArguments(kind="openai", model="other", api_key_env=None, base_url=args.base_url),
                      "judge")
    finally:
        server.shutdown()


class _ReasoningStub(BaseHTTPRequestHandler):
    """A stand-in for a hosted reasoning model: records every request's body and answers by the prompt:
    `null-once` / `null-always`: content null (the first time / always); `cut-once` / `cut-always`: finish_reason
    "length" with half an answer; anything else: a normal reply."""

    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        prompt = body["messages"][0]["content"]
        asked = sum(b["messages"][0]["content"] == prompt for b in type(self).seen)
        content, finish = f"answer to {prompt}", "stop"
        if prompt.startswith("null") and (prompt == "null-always" or asked == 1):
            content = None
        if prompt.startswith("cut") and (prompt == "cut-always" or asked == 1):
            content, finish = f"half an answer to {prompt}", "length"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content},
                                        "finish_reason": finish}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_reasoning_endpoint_gets_its_fields_and_incomplete_replies_are_retried_then_counted(tmp_path):
    from semievol_lf.io_utils import JsonlLog
    from semievol_lf.meteor.chat import cached_chat, chat_identity

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReasoningStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        plain = EndpointChat(ChatModelArguments(kind="openai", model="m", base_url=url, api_key_env=None))
        assert plain.payload(ChatRequest("q", seed=3, temperature=0.5, max_new_tokens=7)) == {
            "model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 0.5, "max_tokens": 7,
            "seed": 3}
        args = ChatModelArguments(kind="openai", model="o3-mini", base_url=url, api_key_env=None, reasoning=True,
                                  omit_fields=["seed"], backoff=0.01)
        assert args.omit_fields == ["seed", "temperature"] and chat_identity(args)["reasoning"] is True
        assert "reasoning" not in chat_identity(plain.args)  # older run folders keep their manifests
        chat = EndpointChat(args)
        prompts = ["fine", "null-once", "null-always", "cut-once", "cut-always"]
        keyed = [(p, ChatRequest(p, seed=i, temperature=0.7, max_new_tokens=5)) for i, p in enumerate(prompts)]
        log = JsonlLog(tmp_path / "teacher.jsonl")
        try:
            out = cached_chat(chat, keyed, log, "distill")
        finally:
            chat.close()
        for body in _ReasoningStub.seen:  # what an o1/o3-style model accepts, nothing it refuses
            assert set(body) == {"model", "messages", "max_completion_tokens"}, body
        asked = [(b["messages"][0]["content"], b["max_completion_tokens"]) for b in _ReasoningStub.seen]
        assert sorted(asked) == sorted([("fine", 5), ("null-once", 5), ("null-once", 5), ("null-always", 5),
                                        ("null-always", 5), ("cut-once", 5), ("cut-once", 10), ("cut-always", 5),
                                        ("cut-always", 10)])  # retried once; a cut reply with twice the limit
        assert out == {"fine": "answer to fine", "null-once": "answer to null-once", "null-always": "",
                       "cut-once": "answer to cut-once", "cut-always": "half an answer to cut-always"}
        rows = {r["key"]: r for r in log.load()}
        assert {k: r.get("problem") for k, r in rows.items()} == {
            "fine": None, "null-once": None, "null-always": "null", "cut-once": None, "cut-always": "length"}
        assert chat.incomplete == {"null": 1, "length": 1}
        # resumed from the cache: nothing asked again, the incomplete replies counted again
        again = EndpointChat(args)
        n = len(_ReasoningStub.seen)
        assert cached_chat(again, keyed, log, "distill") == out and len(_ReasoningStub.seen) == n
        assert again.incomplete == {"null": 1, "length": 1}
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="`reasoning` and `omit_fields` are settings of an endpoint"):
        ChatModelArguments(kind="hf", preset="smollm2-135m", reasoning=True)


def test_the_report_shows_incomplete_replies():
    from semievol_lf.meteor.pipeline import note_incomplete
    from semievol_lf.meteor.report import _incomplete_section

    summary = {}
    note_incomplete(summary, type("C", (), {"name": "teacher", "incomplete": {"length": 2, "null": 1}})())
    note_incomplete(summary, type("C", (), {"name": "teacher", "incomplete": {"null": 1}})())
    note_incomplete(summary, type("C", (), {"name": "student"})())  # a local model: nothing to count
    assert summary == {"incomplete_replies": {"teacher": {"length": 2, "null": 2}}}
    assert "teacher 2 cut at the length limit, 2 null" in "".join(_incomplete_section(summary))
    assert not _incomplete_section({})


# ---------------------------------------------------------------------------------------------- end to end

def test_a_teacher_that_never_accepts_stops_each_question_at_max_revisions(tmp_path, tiny_model):
    """The random tiny model as student and teacher (real LlamaFactory SFT of stage 1 included): it never
    writes a clean `VERDICT: CORRECT`, so every question is revised exactly `max_revisions` times, then dropped;
    no SFT round runs, because nothing was accepted."""
    out = tmp_path / "run"
    teacher = f"teacher={{kind: hf, model: '{tiny_model}', template: default, max_new_tokens: 12}}"
    run_cmd([CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={out}", "student=tiny",
             f"student_model_name_or_path={tiny_model}", teacher, "n_questions=4", "max_new_tokens=12",
             "max_revisions=2", "fine_tune_interval=2", "stop_after=refine", "train_overrides={num_train_epochs: 1}"],
            cwd=ROOT)
    trace = list(read_jsonl(out / "refine" / "trace.jsonl"))
    stats = read_json(out / "refine" / "stats.json")
    v = stats["verdicts"]
    assert v["correct"] == 0 and v["incorrect"] + v["unreadable"] == 4 * 3 and stats["dropped"] == 4
    assert not stats["rounds"] and all(t["judgment"].startswith("VERDICT:") for t in trace)  # the prefill
    for uid in {t["id"] for t in trace}:
        assert [t["iteration"] for t in trace if t["id"] == uid] == [0, 1, 2]
    revised = _cache(out / "refine", "revise")
    assert len(revised) == 4 * 2 and not list((out / "refine").glob("round_*"))
    assert stats["adapter"] == str(out / "sft")  # the student stays the stage-1 one


FAULT = "refine/cache/judge:2"  # killed (SIGKILL) right after the second chunk of the teacher's verdicts
SMALLER = ["n_questions=6", "n_test=2", "num_samples=2"]  # the demo with fewer questions: minutes, not more


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """recipes/meteor_demo.yaml for real: killed once mid-refinement, resumed to the end, then run again."""
    out = tmp_path_factory.mktemp("meteor") / "run"
    cmd = [CLI, "meteor", "run", ROOT / "recipes" / "meteor_demo.yaml", f"output_dir={out}", *SMALLER]
    killed = run_cmd(cmd, cwd=ROOT, check=False, env={**os.environ, "SEMIEVOL_FAULT": FAULT})
    assert killed.returncode == -9 and f"fault injected: SEMIEVOL_FAULT={FAULT}:sigkill" in killed.stderr, \
        killed.stderr[-2000:]
    before = [row["key"] for row in read_jsonl(out / "refine" / "cache" / "judge.jsonl")]
    start = time.monotonic()
    resumed = run_cmd(cmd, cwd=ROOT)
    wall = time.monotonic() - start
    again = run_cmd(cmd, cwd=ROOT)
    cfg = yaml.safe_load((ROOT / "recipes" / "meteor_demo.yaml").read_text())
    for override in SMALLER:
        cfg.update(yaml.safe_load(override.replace("=", ": ", 1)))
    return {"dir": out, "before": before, "resumed": resumed, "again": again, "wall": wall, "cfg": cfg}


def _cache(folder: Path, stage: str) -> dict:
    rows = list(read_jsonl(folder / "cache" / f"{stage}.jsonl"))
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), f"{stage}: a request was computed twice"
    return {r["key"]: r["text"] for r in rows}


@pytest.mark.slow
def test_resume_after_a_kill_reuses_every_finished_request(demo_run):
    d = demo_run["dir"]
    judged = list(_cache(d / "refine", "judge"))
    assert len(demo_run["before"]) >= 2 and judged[:len(demo_run["before"])] == demo_run["before"]
    out = demo_run["resumed"].stdout + demo_run["resumed"].stderr
    assert "guidelines: finished before, skipped" in out and "distill: finished before, skipped" in out
    assert "sft: finished before, skipped" in out
    again = demo_run["again"].stdout + demo_run["again"].stderr
    for step in ("guidelines", "distill", "quality", "refine", "preferences", "judge", "sft", "dpo"):
        assert f"{step}: finished before, skipped" in again
    assert "computed" not in again  # nothing recomputed
    print(f"resumed run: {demo_run['wall']:.0f} s")


@pytest.mark.slow
def test_every_sft_row_comes_from_a_teacher_answer(demo_run):
    from semievol_lf.meteor.distill import distill_prompt

    d = demo_run["dir"]
    teacher = _cache(d / "distill", "teacher")
    guidelines = {r["id"]: r["guideline"] for r in read_jsonl(d / "guidelines" / "guidelines.jsonl")}
    domain = read_json(d / "questions.json")["domain"]
    rows = read_json(d / "distill" / "sft.json")
    assert len(rows) == read_json(d / "distill" / "stats.json")["rows"] > 0
    assert set(guidelines) == {q["uid"] for q in domain} == set(teacher)
    for row in rows:
        assert row["output"] == teacher[row["id"]] and row["instruction"] == next(
            q["question"] for q in domain if q["uid"] == row["id"])
    assert distill_prompt("Q?", "G.").endswith("Question: Q?\n\nGuideline: G.")
    sft = yaml.safe_load((d / "recipes" / "sft.yaml").read_text())
    assert (sft["stage"], sft["dataset"]) == ("sft", "meteor_distilled") and "adapter_name_or_path" not in sft
    assert (d / "sft" / "adapter_config.json").is_file() and (d / "sft" / "semievol_step.json").is_file()


@pytest.mark.slow
def test_the_guideline_ablation_judges_both_teacher_answer_sets(demo_run):
    """quality/: the teacher's answers without the guideline (one per question of the first
    `quality_questions`), the with-guideline ones reused from distill/, both judged; the report's table
    recounts from scores.jsonl."""
    from semievol_lf.meteor.quality import PLAIN_PROMPT, WITH, WITHOUT

    d, n = demo_run["dir"], demo_run["cfg"]["quality_questions"]
    domain = [q["uid"] for q in read_json(d / "questions.json")["domain"]][:n]
    plain, teacher = _cache(d / "quality", "plain"), _cache(d / "distill", "teacher")
    judged = _cache(d / "quality", "judge")
    assert list(plain) == domain and all(plain.values())
    assert set(judged) == {f"{m}|{uid}" for m in (WITH, WITHOUT) for uid in domain}
    rows = list(read_jsonl(d / "quality" / "scores.jsonl"))
    assert len(rows) == 2 * n
    for row in rows:
        assert row["answer"] == (teacher if row["model"] == WITH else plain)[row["id"]]
        assert row["judgment"].startswith("Accuracy:") and row["scores"] == parse_scores(row["judgment"])
    results = read_json(d / "quality" / "results.json")
    assert results == json.loads(json.dumps(summarize(rows, [WITH, WITHOUT])))
    assert read_json(d / "summary.json")["quality"] == results
    report = (d / "report.md").read_text()
    assert "## Data quality: teacher answers with vs without guidelines" in report
    assert f"| {WITH} |" in report and f"| {WITHOUT} |" in report and "{question}" in PLAIN_PROMPT
    print("quality:", {m: (r["valid"], r["overall"]) for m, r in results["scores"].items()})


@pytest.mark.slow
def test_refinement_stops_at_max_revisions_and_trains_at_each_interval(demo_run):
    d, cfg = demo_run["dir"], demo_run["cfg"]
    max_it, interval = cfg["max_revisions"], cfg["fine_tune_interval"]
    trace = list(read_jsonl(d / "refine" / "trace.jsonl"))
    stats = read_json(d / "refine" / "stats.json")
    accepted = read_json(d / "refine" / "accepted.json")
    by_question: dict[str, list] = {}
    for t in trace:
        by_question.setdefault(t["id"], []).append(t)
    assert len(by_question) == stats["questions"]
    for attempts in by_question.values():
        assert [a["iteration"] for a in attempts] == list(range(len(attempts))) and len(attempts) <= max_it + 1
        assert all(a["verdict"] != "correct" for a in attempts[:-1])  # revised only after feedback
        assert all(a["verdict"] == parse_verdict(a["judgment"]) for a in attempts)
        if attempts[-1]["verdict"] != "correct":
            assert len(attempts) == max_it + 1  # dropped only after max_revisions revisions
    counted = {v: sum(t["verdict"] == v for t in trace) for v in ("correct", "incorrect", "unreadable")}
    assert stats["verdicts"] == counted and counted["correct"] == len(accepted) == stats["accepted"]
    for row in accepted:  # the accepted answer is the one the teacher judged correct
        last = by_question[row["id"]][-1]
        assert last["verdict"] == "correct" and last["answer"] == row["output"]
    # one SFT round per `fine_tune_interval` accepted answers, on exactly those answers
    rounds = stats["rounds"]
    assert len(rounds) == len(accepted) // interval >= 1
    for r in rounds:
        k = r["round"]
        data = read_json(d / "refine" / f"round_{k}.json")
        assert data == accepted[(k - 1) * interval:k * interval]
        recipe = yaml.safe_load((d / "recipes" / f"refine_round_{k}.yaml").read_text())
        previous = str(d / "sft") if k == 1 else rounds[k - 2]["adapter"]
        assert recipe["dataset"] == f"meteor_refine_{k}" and recipe["adapter_name_or_path"] == previous
        assert (Path(r["adapter"]) / "semievol_step.json").is_file()
        # every question after the round was answered by the newly trained student
        later = [t for t in trace if t["iteration"] == 0 and
                 [q["uid"] for q in read_json(d / "questions.json")["domain"]].index(t["id"]) >= r["after_questions"]]
        assert all(t["student_round"] >= k for t in later)
    assert stats["adapter"] == (rounds[-1]["adapter"])


@pytest.mark.slow
def test_every_dpo_pair_prefers_the_higher_compute_answer(demo_run):
    d, cfg = demo_run["dir"], demo_run["cfg"]
    candidates = {c["id"]: c for c in read_jsonl(d / "preferences" / "candidates.jsonl")}
    pairs = read_json(d / "preferences" / "pairs.json")
    assert pairs and len(pairs) == read_json(d / "preferences" / "stats.json")["pairs"]
    low = _cache(d / "preferences", "low")
    samples = _cache(d / "preferences", "sample")
    scores = {r["key"]: r["score"] for r in read_jsonl(d / "preferences" / "cache" / "score.jsonl")}
    for pair in pairs:
        c = candidates[pair["id"]]
        texts = [samples[f"{pair['id']}|s{j}"] for j in range(cfg["num_samples"])]
        own = [scores.get(f"{pair['id']}|s{j}", float("-inf")) if texts[j] else float("-inf")
               for j in range(cfg["num_samples"])]
        assert pair["chosen"] == texts[own.index(max(own))] == c["high"]  # the best sample by the student's judgment
        assert pair["rejected"] == low[pair["id"]] == c["low"] and pair["chosen"] != pair["rejected"]
    info = read_json(d / "preferences" / "dataset_info.json")["meteor_preferences"]
    assert info["ranking"] is True and info["columns"]["chosen"] == "chosen"
    dpo = yaml.safe_load((d / "recipes" / "dpo.yaml").read_text())
    refined = read_json(d / "refine" / "stats.json")["adapter"]
    assert dpo["stage"] == "dpo" and dpo["adapter_name_or_path"] == dpo["ref_model_adapters"] == refined
    assert (d / "dpo" / "adapter_config.json").is_file() and (d / "dpo" / "semievol_step.json").is_file()
    assert "'loss'" in (d / "logs" / "dpo.log").read_text() or "train_loss" in (d / "logs" / "dpo.log").read_text()


@pytest.mark.slow
def test_the_judges_table_recounts_from_its_scores(demo_run):
    d = demo_run["dir"]
    rows = list(read_jsonl(d / "judge" / "scores.jsonl"))
    results = read_json(d / "judge" / "results.json")
    assert results == json.loads(json.dumps(summarize(rows, ["w/o METEOR", "w/ METEOR"])))
    assert len(rows) == 2 * demo_run["cfg"]["n_test"]
    for row in rows:
        assert row["scores"] == parse_scores(row["judgment"]) and row["judgment"].startswith("Accuracy:")
    assert sum(r["valid"] for r in results["scores"].values()) == sum(r["scores"] is not None for r in rows)
    report = (d / "report.md").read_text()
    assert "| Model | Accuracy | Completeness | Relevance | Coherence | Reliability | Overall |" in report
    assert "| w/o METEOR |" in report and "| w/ METEOR |" in report and (d / "plots" / "judge_scores.png").is_file()
    summary = read_json(d / "summary.json")
    assert summary["judge"] == results and summary["refine"]["rounds"]
