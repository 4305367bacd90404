"""Where the templates, recipes and data_info folders are: a checkout first, else the installed package."""

from functools import lru_cache
from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _resolve(folder: str, package: str) -> Path:
    local = _CHECKOUT / folder
    if local.is_dir() and (_CHECKOUT / "setup.cfg").is_file():
        return local
    return Path(str(resources.files(package)))


@lru_cache(maxsize=None)
def templates_dir() -> Path:
    return _resolve("templates", "semievol_lf.templates")


@lru_cache(maxsize=None)
def recipes_dir() -> Path:
    return _resolve("recipes", "semievol_lf.recipes_pack")


def project_root() -> Path:
    """The checkout (recipes use paths relative to it); the working directory when installed."""
    return _CHECKOUT if (_CHECKOUT / "setup.cfg").is_file() else Path.cwd()
