"""Where the templates, the recipes and data_info are: from a checkout first, else the copies
installed with the package (setup.cfg ships each folder inside the wheel)."""

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _resolve(folder: str, installed_as: str) -> Path:
    """setup.cfg installs `templates/` as `semievol_lf/templates_pack`, `recipes/` as
    `semievol_lf/recipes_pack` and `data_info/` as `semievol_lf/data_info_pack` (users run the
    recipes from the checkout's root)."""
    local = _CHECKOUT / folder
    if local.is_dir() and (_CHECKOUT / "setup.cfg").is_file():
        return local
    return _PACKAGE / installed_as


@cache
def templates_dir() -> Path:
    """tasks/ (a task's YAML beside its Jinja prompt), semievol/ (ICP, self-justify), meteor/."""
    return _resolve("templates", "templates_pack")


@cache
def recipes_dir() -> Path:
    return _resolve("recipes", "recipes_pack")


@cache
def data_info_dir() -> Path:
    return _resolve("data_info", "data_info_pack")


def project_root() -> Path:
    """The checkout (recipes use paths relative to it); the working directory when installed."""
    return _CHECKOUT if (_CHECKOUT / "setup.cfg").is_file() else Path.cwd()
