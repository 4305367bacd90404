"""A domain's questions: a JSONL file checked row by row (file:line: field), or the generated demo domain.

    {"question": "What is overfitting?", "category": "ML"}          # one line per question
    {"id": "q17", "question": "How does dropout work?"}             # id optional (default: q<line>)

The last `n_test` questions are held out for the judge (stage 4); the others are the domain data of
stages 1-3. Not handled: answers in the file (METEOR's teacher writes them).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from ..data.loading import _read_rows
from ..errors import UserError


@dataclass(frozen=True)
class Question:
    uid: str
    question: str
    category: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


KNOWN_FIELDS = {"id", "question", "category"}


def load_questions(path: str | Path) -> list[Question]:
    """Read and check a questions JSONL; every mistake names the file, line and field."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise UserError(f"{path}: questions must be a .jsonl file (one JSON object per line)")
    out, seen = [], {}
    for line, row in _read_rows(path):
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object like {{\"question\": \"...\"}}")
        unknown = sorted(set(row) - KNOWN_FIELDS)
        if unknown:
            raise UserError(f"{where}: unknown field `{unknown[0]}` (known: {', '.join(sorted(KNOWN_FIELDS))})")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"{where}: question: missing or empty")
        category = row.get("category")
        if category is not None and (not isinstance(category, str) or not category.strip()):
            raise UserError(f"{where}: category: must be a non-empty string when given")
        uid = row.get("id", f"q{line}")
        if not isinstance(uid, (str, int)) or isinstance(uid, bool) or not str(uid).strip():
            raise UserError(f"{where}: id: must be a non-empty string or integer")
        uid = str(uid)
        if uid in seen:
            raise UserError(f"{where}: id: {uid!r} repeats line {seen[uid]}")
        seen[uid] = line
        out.append(Question(uid, question.strip(), category))
    if not out:
        raise UserError(f"{path}: no questions")
    return out


# The generated demo domain: advanced computer education, METEOR's own domain (ML, DL, NLP, CV).
DEMO_TOPICS = {
    "ML": ["overfitting", "cross-validation", "regularization", "the bias-variance trade-off", "gradient descent",
           "feature scaling", "a decision tree", "k-means clustering"],
    "DL": ["dropout", "batch normalization", "a convolutional layer", "backpropagation", "the vanishing gradient",
           "a residual connection"],
    "NLP": ["tokenization", "word embeddings", "attention", "a language model", "beam search"],
    "CV": ["data augmentation", "image segmentation", "a pooling layer", "object detection", "transfer learning"],
}
DEMO_FORMS = ["What is {topic} and why does it matter?", "Explain {topic} with a short example."]


def demo_questions() -> list[Question]:
    """The demo domain, in a fixed order that interleaves categories (so any prefix mixes them).

    -> [Question("ml-0-0", "What is overfitting and why does it matter?", "ML"), Question("dl-0-0", ...), ...]
    """
    out = []
    longest = max(len(t) for t in DEMO_TOPICS.values())
    for form_i, form in enumerate(DEMO_FORMS):
        for i in range(longest):
            for category, topics in DEMO_TOPICS.items():
                if i < len(topics):
                    out.append(Question(f"{category.lower()}-{form_i}-{i}", form.format(topic=topics[i]), category))
    return out


def split_questions(questions: list[Question], n_test: int, n_questions: int | None) -> tuple[list, list]:
    """(domain questions, held-out test questions): the last `n_test` are the test set."""
    if len(questions) <= n_test:
        raise UserError(f"`n_test`={n_test} leaves no domain questions of the {len(questions)} given")
    train, test = questions[:-n_test], questions[-n_test:]
    return (train[:n_questions] if n_questions else train), test
