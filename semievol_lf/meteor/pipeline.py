"""`semievol-lf meteor run RECIPE`: METEOR end to end, resumable, with a report.

    guidelines (student) -> distill (teacher) -> quality (teacher without guidelines, judge) -> SFT ->
    refine (student, teacher; SFT every `fine_tune_interval` items) -> preferences (student) -> SimPO ->
    judge (the student of every stage, judge) -> report

Every step is skipped when its finished outputs match its inputs (a step folder's manifest and final
file; a fine-tune's marker), and an interrupted step resumes from its request cache. Endpoints are
checked first (key set, server up), so a mistake there costs nothing. A failed fine-tune stops the
run and names its command and log.
"""

from pathlib import Path

from ..config import as_config, load_config
from ..errors import exit_on_user_error
from ..io_utils import atomic_write_json
from ..progress import setup_logging
from ..semievol.run_setup import ensure_model
from .chat import LocalChat, open_chat, preflight
from .config import MeteorArguments
from .distill import SFT_DATASET, distill, distill_answers
from .guidelines import write_guidelines
from .judge import judge
from .layout import MeteorLayout
from .preferences import PREFERENCE_DATASET, preferences
from .quality import data_quality
from .questions import demo_questions, load_questions, split_questions
from .refine import refine
from .training import preference_recipe, sft_recipe, train

# the student of each stage, in the judge's table (stage 4)
BASE, DISTILLED, REFINED, EVOLVED = "base", "distilled", "refined", "self-evolved"


def note_incomplete(summary: dict, chat) -> None:
    """Add an endpoint's replies kept incomplete (null, or cut at the length limit) to summary["incomplete_replies"]
    (name -> {"null": n, "length": n}), shown by the report."""
    counts = getattr(chat, "incomplete", None)
    if counts:
        mine = summary.setdefault("incomplete_replies", {}).setdefault(chat.name, {})
        for problem, n in counts.items():
            mine[problem] = mine.get(problem, 0) + n


class MeteorRunner:
    def __init__(self, cfg: MeteorArguments):
        self.cfg = cfg
        self.layout = MeteorLayout(Path(cfg.output_dir).resolve())

    def student(self, adapter: Path | str | None) -> LocalChat:
        cfg = self.cfg
        return LocalChat(cfg.backend, self.model, cfg.template, adapter=str(adapter) if adapter else None,
                         batch_size=cfg.batch_size, backend_kwargs=cfg.backend_kwargs(), name="student",
                         cutoff_len=cfg.cutoff_len)

    def _local_models(self) -> None:
        """Build preset models on first use (the student's, and a local teacher's or judge's)."""
        cfg = self.cfg
        self.model = ensure_model(cfg.preset, cfg.student_model, explicit=bool(cfg.student_model_name_or_path))
        cfg.student_model_name_or_path = self.model  # resolved: the fine-tunes run it too
        for args in (cfg.teacher_args, cfg.judge_args):
            if args.kind != "openai" and args.preset and not args.model:
                from ..models.presets import get_preset

                args.model = ensure_model(get_preset(args.preset), args.local_model, explicit=False)

    def _quality(self, domain: list, teacher) -> dict | None:
        """The guideline ablation, judged by the judge (the teacher's chat when the judge is the teacher)."""
        cfg = self.cfg
        if not cfg.quality_questions:
            return None
        same = cfg.judge_args == cfg.teacher_args
        judge_chat = teacher if same else open_chat(cfg.judge_args, "judge", cfg.batch_size, cfg.dtype, cfg.cutoff_len)
        try:
            return data_quality(cfg, self.layout, domain, distill_answers(self.layout), teacher, judge_chat)
        finally:
            if not same:
                note_incomplete(self.summary, judge_chat)
                judge_chat.close()

    def run(self) -> dict:
        cfg, layout = self.cfg, self.layout
        preflight(cfg.teacher_args, "teacher")  # before anything expensive
        if cfg.judge_args != cfg.teacher_args:
            preflight(cfg.judge_args, "judge")
        names = {"teacher": cfg.teacher_args.preset or cfg.teacher_args.model,
                 "judge_model": cfg.judge_args.preset or cfg.judge_args.model}
        self._local_models()
        questions = demo_questions() if cfg.questions == "generated" else load_questions(cfg.questions)
        domain, test = split_questions(questions, cfg.n_test, cfg.n_questions)
        atomic_write_json(layout.questions, {"domain": [q.to_dict() for q in domain],
                                             "test": [q.to_dict() for q in test]})
        summary = {"student": cfg.student, **names,
                   "domain_questions": len(domain),
                   "test_questions": len(test), "output_dir": str(layout.root)}
        self.summary = summary

        # Stage 1: weak-to-strong distillation
        student = self.student(None)
        try:
            guidelines = write_guidelines(cfg, layout, domain, student)
        finally:
            student.close()  # before the teacher loads: one model at a time
        if cfg.stop_after == "guidelines":
            return summary
        teacher = open_chat(cfg.teacher_args, "teacher", cfg.batch_size, cfg.dtype, cfg.cutoff_len)
        try:
            summary["distill"] = distill(cfg, layout, domain, guidelines, teacher)
            summary["quality"] = self._quality(domain, teacher)
            if cfg.stop_after == "distill":
                return summary
            sft = train("sft", sft_recipe(cfg, "distill", layout.distill, SFT_DATASET, layout.sft), layout)
            # Stage 2: refinement with the teacher's verdicts, an SFT round every `fine_tune_interval`
            summary["refine"] = refine(cfg, layout, domain, sft, self.student, teacher)
        finally:
            note_incomplete(summary, teacher)
            teacher.close()
        if cfg.stop_after == "refine":
            return summary
        refined = Path(summary["refine"]["adapter"])

        # Stage 3: self-evolution, the greedy answer against sampled ones -> a preference fine-tune (SimPO)
        student = self.student(refined)
        try:
            summary["preferences"] = preferences(cfg, layout, domain, student)
        finally:
            student.close()
        if cfg.stop_after == "preferences":
            return summary
        # LlamaFactory's parser checks the preference recipe before it trains (not again once it trained)
        dpo = train("dpo", preference_recipe(cfg, layout.preferences, PREFERENCE_DATASET, layout.dpo,
                                             previous=refined),
                    layout, validate=not (layout.dpo / "semievol_step.json").is_file())

        # Stage 4: the judge ranks the student of every stage on the same test questions
        judge_chat = open_chat(cfg.judge_args, "judge", cfg.batch_size, cfg.dtype, cfg.cutoff_len)
        students = {BASE: None, DISTILLED: sft, REFINED: refined, EVOLVED: dpo}
        try:
            summary["judge"] = judge(cfg, layout, test, {name: self.student(a) for name, a in students.items()},
                                     judge_chat)
        finally:
            note_incomplete(summary, judge_chat)
            judge_chat.close()
        summary["adapters"] = {"sft": str(sft), "refine": str(refined), "dpo": str(dpo)}
        atomic_write_json(layout.summary, summary)
        return summary


def main(cfg: MeteorArguments | dict | None = None, argv: list[str] | None = None) -> dict:
    cfg = (load_config(MeteorArguments, argv, prog=MeteorArguments.PROG) if argv is not None
           else as_config(MeteorArguments, cfg))
    summary = MeteorRunner(cfg).run()
    if "judge" in summary:
        from .report import format_table, write_report

        report = write_report(Path(cfg.output_dir), summary)
        print(format_table(summary))
        print(f"report: {report}")
    return summary


def cli(argv: list[str]) -> None:
    """`semievol-lf meteor run RECIPE [key=value ...]`."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: semievol-lf meteor run RECIPE.yaml [key=value ...]\n\n"
              "METEOR (weak-to-strong domain evolution): `semievol-lf meteor run --help` lists the recipe's keys.")
        raise SystemExit(0 if argv else 2)
    if argv[0] != "run":
        from ..errors import UserError

        raise UserError(f"unknown meteor command {argv[0]!r}; usage: semievol-lf meteor run RECIPE.yaml")
    main(argv=argv[1:])


if __name__ == "__main__":
    setup_logging()
    with exit_on_user_error():
        main()
