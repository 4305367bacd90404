"""A corpus of bad (and awkward but valid) data files, generated into a tmp folder; nothing is committed.

Each case is one folder holding a full task source (labeled/unlabeled/test) in which one split file is
the case; the other two are small and valid, so `python -m semievol_lf.prepare` can run on the folder.
A case either loads, with the expected questions/answers, or raises `UserError` whose one-line message
names the file, the line an editor shows (for row-level problems) and the field.

    cases = write_bad_inputs(tmp_path)   # -> [Case(name="truncated_mid_row", ...), ...]
    load_examples(cases[0].path, get_task(cases[0].task), cases[0].split)
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

OPTS4 = json.dumps(["red", "green", "blue", "black"])
HEADER = ["question", "options", "answer"]


@dataclass
class Case:
    name: str
    content: bytes
    filename: str = "labeled.csv"  # the split file this case replaces: <split>.<csv|json|jsonl>
    task: str = "mmlu"
    # expected outcome: `loads` as (question, answer) pairs, or a UserError at `line` containing `field`
    loads: list[tuple[str, str | None]] | None = None
    line: int | None = None  # None: a whole-file problem (empty file, undecodable JSON, ...)
    field: str | None = None  # a text the message must contain: the column, or what is wrong
    n_rows: int | None = None  # when loads: check the count instead of listing every row
    path: Path = Path()  # set by write_bad_inputs

    @property
    def split(self) -> str:
        return self.filename.split(".")[0]


def csv_bytes(rows: list[list], header: list[str] = HEADER, delimiter: str = ",", newline: str = "\n") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _row(i: int, task: str, answer: str = "A") -> list:
    if task == "convfinqa":
        return [f"q{i}: what was the change?", str(i)]
    return [f"q{i}: which colour?", OPTS4, answer]


def good_split(task: str, n: int) -> bytes:
    header = ["question", "answer"] if task == "convfinqa" else HEADER
    return csv_bytes([_row(i, task) for i in range(n)], header)


def make_cases() -> list[Case]:
    good = [["q1", OPTS4, "A"]]
    big = "x" * 1_000_000
    pro_header = ["question_id", "question", "options", "answer", "category"]
    pro_opts = json.dumps([f"opt {i}" for i in range(10)])
    num_header = ["question", "answer"]
    return [
        # --- CSV structure ---
        Case("truncated_mid_row", csv_bytes(good) + b'"q2","' + OPTS4.replace('"', '""').encode() + b'"',
             line=3, field="answer: missing"),
        Case("truncated_mid_quote", csv_bytes(good) + b'"q2 is cut off in the mi', line=3, field="options: missing"),
        Case("truncated_mid_options", csv_bytes(good) + b'"q2","[""red"",""gr', line=3, field="answer: missing"),
        Case("stray_comma", csv_bytes(good) + b'q2,' + OPTS4.encode() + b',A\n', line=3, field="answer"),
        Case("delimiter_semicolon", csv_bytes(good, delimiter=";"), line=1, field="comma-separated"),
        Case("delimiter_tab", csv_bytes(good, delimiter="\t"), line=1, field="comma-separated"),
        Case("crlf_and_multiline_question",
             csv_bytes([["q1\nsecond line\nthird", OPTS4, "B"], ["q2", OPTS4, "Z"]], newline="\r\n"),
             line=5, field="answer"),
        Case("form_feed_unquoted", csv_bytes(good).replace(b"q1", b"q\x0c1"), loads=[("q\x0c1", "A")]),
        # --- encodings ---
        Case("utf8_bom_csv", b"\xef\xbb\xbf" + csv_bytes(good), loads=[("q1", "A")]),
        Case("utf8_bom_json", b"\xef\xbb\xbf" + json.dumps([{"question": "q1", "options": OPTS4, "answer": "a"}]).encode(),
             "labeled.json", loads=[("q1", "A")]),
        Case("latin1_in_utf8_csv", csv_bytes(good + [["caf\u00e9", OPTS4, "A"]]).replace(b"caf\xc3\xa9", b"caf\xe9"),
             line=3, field="not UTF-8"),
        Case("latin1_in_utf8_after_bom", b"\xef\xbb\xbf" + csv_bytes([["\u00e9", OPTS4, "A"]]).replace(b"\xc3\xa9", b"\xe9"),
             line=2, field="not UTF-8"),
        Case("latin1_in_utf8_jsonl", jsonl_bytes([{"question": "q1", "options": OPTS4, "answer": "A"}])
             + b'{"question": "na\xefve", "options": [], "answer": "A"}\n', "labeled.jsonl", line=2, field="not UTF-8"),
        # --- options ---
        Case("options_not_json", csv_bytes([["q1", "red, green, blue", "A"]]), line=2, field="options: not a JSON list"),
        Case("options_python_literal", csv_bytes([["q1", "['red', 'green']", "B"]]), loads=[("q1", "B")]),
        Case("options_json_object", csv_bytes([["q1", '{"A": "red"}', "A"]]), line=2, field="options: expected a JSON list"),
        Case("options_empty_list", csv_bytes([["q1", "[]", "A"]]), line=2, field="options: needs at least 2"),
        Case("options_duplicated", csv_bytes([["q1", '["red", "blue", "red"]', "C"]]), loads=[("q1", "C")]),  # positional
        Case("options_more_than_10", csv_bytes([["1", "q1", json.dumps([str(i) for i in range(11)]), "A", "law"]], pro_header),
             task="mmlu_pro", line=2, field="options: 11 options, at most 10"),
        Case("options_more_than_task", csv_bytes([["q1", json.dumps(list("abcde")), "A"]]), line=2,
             field="options: 5 options, task mmlu has at most 4"),
        Case("options_deeply_nested", csv_bytes([["q1", "[" * 50_000, "A"]]), line=2, field="options: not a JSON list"),
        # --- answers ---
        Case("answer_outside_options", csv_bytes(good + [["q2", OPTS4, "E"]]), line=3, field="answer: 'E' is not a letter A-D"),
        Case("answer_outside_two_options", csv_bytes([["q1", '["yes", "no"]', "C"]]), task="arc", line=2,
             field="answer: 'C' is not a letter A-B"),
        Case("answer_two_letters", csv_bytes([["q1", OPTS4, "AB"]]), line=2, field="answer"),
        Case("answer_empty", csv_bytes([["q1", OPTS4, ""]]), line=2, field="answer"),
        Case("answer_loose_forms", csv_bytes([["q1", OPTS4, "(b)"], ["q2", OPTS4, " c. "]]), loads=[("q1", "B"), ("q2", "C")]),
        Case("unlabeled_answers_are_garbage", csv_bytes([["q1", OPTS4, "not a letter"]]), "unlabeled.csv", loads=[("q1", None)]),
        # --- questions, ids ---
        Case("empty_question", csv_bytes(good + [["", OPTS4, "A"]]), line=3, field="question: empty"),
        Case("blank_question", csv_bytes(good + [["  \t ", OPTS4, "A"]]), line=3, field="question: empty"),
        Case("duplicate_ids", csv_bytes([["70", "q1", pro_opts, "A", "law"], ["71", "q2", pro_opts, "B", "law"],
                                         ["70", "q3", pro_opts, "C", "law"]], pro_header),
             task="mmlu_pro", line=4, field="question_id: '70' already used on row 2"),
        Case("huge_question_csv", csv_bytes([[big, OPTS4, "D"]]), loads=[(big, "D")]),
        Case("huge_question_jsonl", jsonl_bytes([{"question": big, "options": OPTS4, "answer": "D"}]), "labeled.jsonl",
             loads=[(big, "D")]),
        # --- whole files ---
        Case("empty_labeled_header_only", csv_bytes([]), field="no rows"),
        Case("empty_file", b"", field="file is empty"),
        Case("blank_file", b"\n \n\r\n", field="file is empty"),
        Case("empty_json_list", b"[]", "labeled.json", field="no rows"),
        Case("missing_column", csv_bytes([["q1", OPTS4]], ["question", "options"]), line=1, field="answer"),
        Case("missing_column_later_jsonl_row", jsonl_bytes([{"question": "q1", "options": OPTS4, "answer": "A"},
                                                            {"question": "q2", "answer": "A"}]),
             "labeled.jsonl", line=2, field="options"),
        Case("unlabeled_1000x_labeled", good_split("mmlu", 2001), "unlabeled.csv", n_rows=2001),
        # --- JSON structure ---
        Case("json_not_a_list", json.dumps({"question": "q1"}).encode(), "labeled.json", field="list of objects"),
        Case("json_row_not_object", b'[\n  {"question": "q1", "options": ["a", "b"], "answer": "A"},\n  "q2"\n]',
             "labeled.json", line=3, field="object with named fields"),
        Case("json_pretty_printed_error_line",
             json.dumps([{"question": "q1", "options": ["a", "b"], "answer": "A"},
                         {"question": "q2", "options": ["a", "b"], "answer": "C"}], indent=2).encode(),
             "labeled.json", line=10, field="answer: 'C'"),
        Case("json_syntax_error", b'[\n  {"question": "q1",\n   "options": ["a", "b"] "answer": "A"}\n]', "labeled.json",
             line=3, field="not valid JSON"),
        Case("jsonl_bad_line_after_blank", jsonl_bytes([{"question": "q1", "options": OPTS4, "answer": "A"}])
             + b"\n\n{'question': 'q2'}\n", "labeled.jsonl", line=4, field="not valid JSON"),
        Case("jsonl_deeply_nested", b'{"question": ' + b"[" * 50_000 + b"\n", "labeled.jsonl", line=1, field="not valid JSON"),
        Case("jsonl_line_separator_in_question", jsonl_bytes([{"question": "q1\u2028\u2029\x85end", "options": OPTS4,
                                                               "answer": "A"}]),
             "labeled.jsonl", loads=[("q1\u2028\u2029\x85end", "A")]),
        Case("json_values_not_strings", json.dumps([{"question": 12, "options": ["a", 2], "answer": None}]).encode(),
             "labeled.json", line=1, field="answer: 'None'"),
        # --- convfinqa numbers ---
        Case("convfinqa_number_forms", csv_bytes([["q1", "1,234.5"], ["q2", "(12)"], ["q3", "12%"], ["q4", "\u22123"],
                                                  ["q5", "$1,000"], ["q6", "2.5e-3"], ["q7", "-0.50"]], num_header),
             task="convfinqa", loads=[("q1", "1234.5"), ("q2", "-12"), ("q3", "0.12"), ("q4", "-3"), ("q5", "1000"),
                                      ("q6", "0.0025"), ("q7", "-0.5")]),  # 12% is 0.12: the authors' scoring
        Case("convfinqa_number_words", csv_bytes([["q1", "1"], ["q2", "twelve"]], num_header), task="convfinqa",
             line=3, field="answer: 'twelve' is not a number"),
        Case("convfinqa_unbalanced_paren", csv_bytes([["q1", "(12"]], num_header), task="convfinqa",
             line=2, field="answer: '(12'"),
        Case("convfinqa_thousands_misplaced", csv_bytes([["q1", "1,23.4"]], num_header), task="convfinqa",
             line=2, field="answer"),
    ]



def write_bad_inputs(root: Path) -> list[Case]:
    """Write every case into `root/<case name>/` beside two valid splits; return the cases with `path` set."""
    cases = make_cases()
    for case in cases:
        folder = root / case.name
        folder.mkdir(parents=True)
        for split in ("labeled", "unlabeled", "test"):
            if split != case.split:
                (folder / f"{split}.csv").write_bytes(good_split(case.task, 2))
        case.path = folder / case.filename
        case.path.write_bytes(case.content)
    return cases
