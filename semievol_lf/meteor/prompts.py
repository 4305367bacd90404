"""METEOR's prompts, kept as data in templates/meteor/NAME.jinja (plain text: the chat format is the
model's). guideline (stage 1a), distill (1b), plain (1c), answer, verdict and revise (stage 2; answer
also in stages 3 and 4), judge (1c and 4).

    meteor_prompt("answer", question="What is dropout?")   # answer.jinja, `{{ question }}` filled in

The text is rendered exactly (`render_raw`: nothing stripped), and a value is pasted as it is, braces
and `{{ }}` included.
"""

from ..data.prompts import render_raw


def meteor_prompt(name: str, **fields: str) -> str:
    """templates/meteor/NAME.jinja with `fields` filled in."""
    return render_raw(f"meteor/{name}.jinja", **fields)


def prompt_shape(name: str, *fields: str) -> str:
    """The prompt with each field shown as `{field}`, e.g. "...\\n\\nGuideline: {guideline}": what a step's
    manifest records, so an edit to a template's text refuses to resume the steps made with the old one."""
    return meteor_prompt(name, **{field: "{" + field + "}" for field in fields})
