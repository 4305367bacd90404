"""Task prompts, in-context demonstrations and self-justify prompts, rendered from the top-level templates/
folder (shipped in the wheel) and a user's task folder.

This renders plain text only; wrapping it in the model's chat format is `chat_format.py`'s job,
so the text here is exactly the `instruction` the LlamaFactory fine-tunes see.
"""

from functools import cache
from pathlib import Path

import jinja2

from ..paths import templates_dir
from .extraction import LETTERS
from .loading import Example
from .tasks import Task


@cache
def environment(task_dir: Path | None = None) -> jinja2.Environment:
    """Templates are found in `task_dir` (a user's task file's folder) first, then templates/tasks/ (the
    built-in prompts and their partials, `_options.jinja`, ...), then templates/ (`semievol/icp.jinja`)."""
    root = templates_dir()
    search = [str(root / "tasks"), str(root)]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(([str(task_dir)] if task_dir else []) + search),
        undefined=jinja2.StrictUndefined,  # a missing field is an error, not an empty string
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, task_dir: Path | None = None, **variables) -> str:
    """Render a template; surrounding blank lines are dropped so prompts end in text."""
    return environment(task_dir).get_template(template).render(letters=LETTERS, **variables).strip()


def task_prompt(task: Task, example: Example) -> str:
    """The plain prompt t_j of one question, e.g. for the demo task:

    "Sentiment of: zorp blick\\nA. negative\\nB. neutral\\nC. positive"
    """
    return render(
        task.prompt.name,
        task.prompt.parent,
        question=example.question,
        options=example.options,
        category=example.category,
        answer_type=task.answer_type,
        labels=list(task.labels),
    )


def icp_prompt(task: Task, example: Example, demos: list[Example]) -> str:
    """The question preceded by labeled demonstrations (their prompts and SFT targets)."""
    if not demos:
        return task_prompt(task, example)
    rendered = [{"prompt": task_prompt(task, d), "target": task.target(d.answer)} for d in demos]
    return render("semievol/icp.jinja", demos=rendered, prompt=task_prompt(task, example))


def justify_prompt(task: Task, example: Example, responses: list[str]) -> str:
    """Self-justify (Eq. 5): the question and the n numbered candidate responses."""
    template = {"number": "semievol/justify_number.jinja", "label": "semievol/justify_label.jinja"}.get(
        task.answer_type, "semievol/justify.jinja")
    return render(template, prompt=task_prompt(task, example), responses=responses, labels=list(task.labels))


@cache
def _raw_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,  # the file's last newline is the file's, not the prompt's
        autoescape=False,
    )


def render_raw(template: str, **variables) -> str:
    """Render a template (a path under templates/, e.g. "meteor/answer.jinja") exactly: unlike `render`,
    nothing is stripped, so a prompt that ends in a value (a question, a model's answer) keeps its
    whitespace. Values are pasted as they are: braces and `{{ }}` in them stay literal."""
    return _raw_environment().get_template(template).render(**variables)
