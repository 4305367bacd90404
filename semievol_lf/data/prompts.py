"""Task prompts, in-context demonstrations and self-justify prompts, rendered from semievol_lf/templates/
(package data).

This renders plain text only; wrapping it in the model's chat format is `chat_format.py`'s job,
so the text here is exactly the `instruction` the LlamaFactory fine-tunes see.
"""

from functools import cache

import jinja2

from ..paths import templates_dir
from .extraction import LETTERS
from .loading import Example
from .tasks import Task


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(templates_dir() / "tasks"), str(templates_dir())]),
        undefined=jinja2.StrictUndefined,  # a missing field is an error, not an empty string
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **variables) -> str:
    """Render a template; surrounding blank lines are dropped so prompts end in text."""
    return _env().get_template(template).render(letters=LETTERS, **variables).strip()


def task_prompt(task: Task, example: Example) -> str:
    """The plain prompt t_j of one question, e.g. for the demo task:

    "Sentiment of: zorp blick\\nA. negative\\nB. neutral\\nC. positive"
    """
    return render(
        task.prompt,
        question=example.question,
        options=example.options,
        category=example.category,
        answer_type=task.answer_type,
    )


def icp_prompt(task: Task, example: Example, demos: list[Example]) -> str:
    """The question preceded by labeled demonstrations (their prompts and SFT targets)."""
    if not demos:
        return task_prompt(task, example)
    rendered = [{"prompt": task_prompt(task, d), "target": task.target(d.answer)} for d in demos]
    return render("semievol/icp.jinja", demos=rendered, prompt=task_prompt(task, example))


def justify_prompt(task: Task, example: Example, responses: list[str]) -> str:
    """Self-justify (Eq. 5): the question and the n numbered candidate responses."""
    template = "semievol/justify_number.jinja" if task.answer_type == "number" else "semievol/justify.jinja"
    return render(template, prompt=task_prompt(task, example), responses=responses)
