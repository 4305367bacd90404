"""A generated three-way sentiment task over invented words, in the released layout.

Labeled rows use only "seen" cue words; unlabeled rows mix seen and unseen cue words of
one class (some hold unseen words only); the test set weighs unseen words. So labeled
data covers part of the signal and the unlabeled data links the rest to it, which is
exactly what semi-supervised fine-tuning can exploit. Every choice is seeded.
"""

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..io_utils import atomic_write_text

OPTIONS = ["negative", "neutral", "positive"]
LETTERS = "ABC"


@dataclass(frozen=True)
class DemoSpec:
    seed: int = 0
    n_labeled: int = 90
    n_unlabeled: int = 480
    n_test: int = 200
    cue_words: int = 30  # per class, half seen in labeled data, half unseen
    fillers: int = 40
    unseen_only_unlabeled: float = 0.2
    unseen_only_test: float = 0.5
    seen_only_test: float = 0.25


def _invent_words(rng: random.Random, n: int) -> list[str]:
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ["", "n", "r", "sh", "k", "m"]
    words: set[str] = set()
    while len(words) < n:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(2, 3))) + rng.choice(codas)
        words.add(word)
    return sorted(words)


def vocabulary(spec: DemoSpec) -> dict:
    """{"seen": [[neg...], [neu...], [pos...]], "unseen": [...], "fillers": [...]} for this seed."""
    rng = random.Random(spec.seed)
    words = _invent_words(rng, 3 * spec.cue_words + spec.fillers)
    rng.shuffle(words)
    half = spec.cue_words // 2
    cues = [words[i * spec.cue_words:(i + 1) * spec.cue_words] for i in range(3)]
    return {
        "seen": [c[:half] for c in cues],
        "unseen": [c[half:] for c in cues],
        "fillers": words[3 * spec.cue_words:],
    }


def _sentence(rng: random.Random, vocab: dict, label: int, kind: str) -> str:
    seen, unseen = vocab["seen"][label], vocab["unseen"][label]
    if kind == "seen":
        cues = rng.sample(seen, rng.randint(1, 2))
    elif kind == "unseen":
        cues = rng.sample(unseen, rng.randint(1, 2))
    else:  # mixed: the bridge from seen to unseen words
        cues = rng.sample(seen, 1) + rng.sample(unseen, rng.randint(1, 2))
    words = cues + rng.sample(vocab["fillers"], rng.randint(2, 4))
    rng.shuffle(words)
    return " ".join(words)


def _rows(rng: random.Random, vocab: dict, n: int, kinds: list[tuple[str, float]]) -> list[dict]:
    rows = []
    for i in range(n):
        label = i % 3
        r, acc, kind = rng.random(), 0.0, kinds[-1][0]
        for name, share in kinds:
            acc += share
            if r < acc:
                kind = name
                break
        rows.append({"question": _sentence(rng, vocab, label, kind), "options": json.dumps(OPTIONS),
                     "answer": LETTERS[label], "kind": kind})
    rng.shuffle(rows)
    return rows


def generate(spec: DemoSpec) -> dict[str, list[dict]]:
    """{"labeled": rows, "unlabeled": rows, "test": rows}; rows carry `kind` (seen/mixed/unseen)."""
    vocab = vocabulary(spec)
    rng = random.Random(spec.seed + 1)
    mixed_test = 1.0 - spec.unseen_only_test - spec.seen_only_test
    return {
        "labeled": _rows(rng, vocab, spec.n_labeled, [("seen", 1.0)]),
        "unlabeled": _rows(rng, vocab, spec.n_unlabeled,
                           [("unseen", spec.unseen_only_unlabeled), ("mixed", 1.0 - spec.unseen_only_unlabeled)]),
        "test": _rows(rng, vocab, spec.n_test,
                      [("unseen", spec.unseen_only_test), ("seen", spec.seen_only_test), ("mixed", mixed_test)]),
    }


def write_demo_data(out: str | Path, spec: DemoSpec) -> Path:
    """Write labeled.csv, unlabeled.csv (answers kept, as released; the method never reads them), test.csv."""
    out = Path(out)
    for split, rows in generate(spec).items():
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["question", "options", "answer", "kind"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / f"{split}.csv", buf.getvalue())
    return out


def corpus(spec: DemoSpec) -> list[str]:
    """Text the demo tokenizer is trained on: every word of the task and of its prompts."""
    vocab = vocabulary(spec)
    words = [w for group in vocab["seen"] + vocab["unseen"] for w in group] + vocab["fillers"]
    return [" ".join(words)] + [" ".join(OPTIONS)]
