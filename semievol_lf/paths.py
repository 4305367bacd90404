"""Where the templates, recipes and data_info folders are: a checkout first, else the installed package."""

from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _resolve(folder: str, installed_as: str) -> Path:
    """setup.cfg installs `templates/` as `semievol_lf/templates` and `recipes/` as `semievol_lf/recipes_pack`."""
    local = _CHECKOUT / folder
    if local.is_dir() and (_CHECKOUT / "setup.cfg").is_file():
        return local
    return _PACKAGE / installed_as


@lru_cache(maxsize=None)
def templates_dir() -> Path:
    return _resolve("templates", "templates")


@lru_cache(maxsize=None)
def recipes_dir() -> Path:
    return _resolve("recipes", "recipes_pack")


def project_root() -> Path:
    """The checkout (recipes use paths relative to it); the working directory when installed."""
    return _CHECKOUT if (_CHECKOUT / "setup.cfg").is_file() else Path.cwd()
