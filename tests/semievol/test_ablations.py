"""The ablations of paper Table 2, read from what a real pseudolabel run wrote: which models, shot counts
and how many collaborators were used, and which model self-justified and scored the entropies.

Each run is the pseudolabel step that `semievol-lf run` builds for the switch (RunArguments.pseudolabel_args),
on the session's one trained warm-up; requests are replayed on the backend to show they ran as recorded.
"""

import json
import shutil

import pytest

pytestmark = pytest.mark.slow
NO_ANSWER = "[no answer]"


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


def pseudolabel_for(box, model, name: str, **switches) -> tuple[dict, list[dict]]:
    """The run's pseudolabel step for these switches, in-process; (stats.json, candidates.jsonl)."""
    from semievol_lf.config import PACKAGED_MINILM, RunArguments, build_config
    from semievol_lf.semievol.pseudolabel import run as pseudolabel

    run = build_config(RunArguments, {"model_name_or_path": str(model), "embedder": PACKAGED_MINILM,
                                      "batch_size": 32, "max_new_tokens": 8, **switches})
    out = box / "saves" / "ablations" / name
    pseudolabel.main(run.pseudolabel_args(box / "data/demo", box / "saves/tiny/demo/warmup", out, seed=42))
    return json.loads((out / "stats.json").read_text()), read_jsonl(out / "candidates.jsonl")


class Replay:
    """The backend and prompts the step used, to re-run one recorded request."""

    def __init__(self, box, model):
        from semievol_lf.backends import load_backend
        from semievol_lf.data.loading import load_prepared_split
        from semievol_lf.data.tasks import get_task
        from semievol_lf.llamafactory.chat_format import ChatFormat

        self.task = get_task("demo")
        self.chat = ChatFormat(str(model), "default")
        self.backend = load_backend("hf", str(model), str(box / "saves/tiny/demo/warmup"),
                                    stop_ids=self.chat.stop_ids, decode=self.chat.decode)
        self.unlabeled = {e.uid: e for e in load_prepared_split(box / "data/demo", self.task, "unlabeled")}

    def generate(self, prompt: str, adapter: bool, seed: int, temperature: float) -> str:
        from semievol_lf.backends import GenerationRequest

        req = GenerationRequest(self.chat.prompt_ids(prompt), adapter=adapter, seed=seed, temperature=temperature,
                                max_new_tokens=8)
        return self.backend.generate([req])[0].text

    def zero_shot(self, cand: dict, uid: str) -> str:
        """A 0-shot candidate's response, generated again by the model its record names."""
        from semievol_lf.data.prompts import task_prompt

        assert cand["shots"] == 0
        return self.generate(task_prompt(self.task, self.unlabeled[uid]), cand["model"] == "warm", cand["seed"], 1.0)

    def entropy(self, uid: str, answer: str, adapter: bool) -> float:
        from semievol_lf.backends import ScoreRequest
        from semievol_lf.data.prompts import task_prompt
        from semievol_lf.semievol.pseudolabel.selection import mean_nll

        req = ScoreRequest(*self.chat.encode(task_prompt(self.task, self.unlabeled[uid]), f"Answer: {answer}"),
                           adapter=adapter)
        return mean_nll(self.backend.score([req])[0])


@pytest.fixture(scope="module")
def tiny(trained_sandbox):
    return trained_sandbox / ".cache/tiny-llama"


@pytest.fixture(scope="module")
def no_icp(trained_sandbox, tiny):
    return pseudolabel_for(trained_sandbox, tiny, "no_icp", no_icp=True, justify="vote")


def test_without_icp_four_zero_shot_collaborators_each_with_its_own_seeds(trained_sandbox, tiny, no_icp):
    stats, rows = no_icp
    assert sorted(stats["configs"]) == ["base-0shot", "base-0shot#2", "warm-0shot", "warm-0shot#2"]
    assert stats["scored_by"] == "warm"
    for row in rows:
        cands = row["candidates"]
        assert sorted(c["model"] for c in cands) == ["base", "base", "warm", "warm"]
        assert [c["shots"] for c in cands] == [0, 0, 0, 0]
        assert len({c["prompt_tokens"] for c in cands}) == 1  # one prompt, no demonstrations
        assert len({c["seed"] for c in cands}) == 4
    # The repeated warm configuration really sampled with its own seeds (the random base only writes `::::`).
    by_config = [{c["config"]: c["response"] for c in row["candidates"]} for row in rows]
    assert any(r["warm-0shot"] != r["warm-0shot#2"] for r in by_config)
    replay = Replay(trained_sandbox, tiny)
    try:
        for row in rows[:2]:
            for cand in row["candidates"]:
                assert replay.zero_shot(cand, row["id"]) == cand["response"], cand["config"]
    finally:
        replay.backend.close()


def test_without_cl_one_warm_collaborator_with_the_k_shot_prompt_and_no_self_justify(trained_sandbox, tiny,
                                                                                        no_icp):
    stats, rows = pseudolabel_for(trained_sandbox, tiny, "no_cl", no_cl=True)  # justify: all, the default
    assert stats["configs"] == ["warm-3shot"] and stats["justified_by"] is None and stats["scored_by"] == "warm"
    zero_shot = {r["id"]: r["candidates"][0]["prompt_tokens"] for r in no_icp[1]}
    for row in rows:
        [cand] = row["candidates"]
        assert (cand["model"], cand["shots"]) == ("warm", 3)
        assert cand["prompt_tokens"] > zero_shot[row["id"]] + 3 * 5  # three demonstrations in the prompt
        assert row["justified"] is None and row["pseudo_answer"] == cand["answer"]
    asked = trained_sandbox / "saves/ablations/no_cl/cache/justify.jsonl"
    assert not asked.exists() or not asked.read_text()  # no self-justify request was made
    valid = sum(r["pseudo_answer"] != NO_ANSWER for r in rows)
    assert stats["model_calls_per_sample"] == pytest.approx(1 + valid / len(rows), abs=1e-3)


@pytest.fixture(scope="module")
def answering_base(trained_sandbox, tiny, tmp_path_factory):
    """A base model that answers: the warm adapter merged into the tiny model (the random base answers
    nothing, so there would be no pseudo-label to score). The warm adapter is still loaded on top of it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("answering_base") / "model"
    shutil.copytree(tiny.resolve(), out)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny),
                                       trained_sandbox / "saves/tiny/demo/warmup").merge_and_unload()
    merged.save_pretrained(out)
    return out


def test_without_iwp_the_base_model_collaborates_justifies_and_scores(trained_sandbox, answering_base):
    from semievol_lf.data.prompts import justify_prompt
    from semievol_lf.semievol.pseudolabel.collaborate import request_seed

    stats, rows = pseudolabel_for(trained_sandbox, answering_base, "no_iwp", no_iwp=True)  # justify: all
    assert sorted(stats["configs"]) == ["base-0shot", "base-1shot", "base-2shot", "base-3shot"]
    assert (stats["justified_by"], stats["scored_by"]) == ("base", "base")
    for row in rows:
        cands = sorted(row["candidates"], key=lambda c: c["shots"])
        assert [c["model"] for c in cands] == ["base"] * 4
        assert [c["prompt_tokens"] for c in cands] == sorted({c["prompt_tokens"] for c in cands})  # 0-3 demos
        assert row["justified"] is not None
    scored = [r for r in rows if r["entropy"] is not None][:3]
    assert scored, "the answering base model gave no pseudo-label"
    replay = Replay(trained_sandbox, answering_base)
    try:
        for row in rows[:2]:
            cand = next(c for c in row["candidates"] if c["shots"] == 0)
            assert replay.zero_shot(cand, row["id"]) == cand["response"]  # sampled by the base model
            prompt = justify_prompt(replay.task, replay.unlabeled[row["id"]],
                                    [c["response"] for c in row["candidates"]])
            seed = request_seed(42, row["id"], "justify")
            assert replay.generate(prompt, False, seed, 1.0) == row["justified"]  # justify_temperature 1.0
        for row in scored:  # Eq. 6 under the base model, not under the warm adapter
            assert row["entropy"] == pytest.approx(replay.entropy(row["id"], row["pseudo_answer"], False), abs=1e-5)
        assert any(abs(row["entropy"] - replay.entropy(row["id"], row["pseudo_answer"], True)) > 1e-3
                   for row in scored)
    finally:
        replay.backend.close()
