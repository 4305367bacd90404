"""The one exception type for user mistakes; entry points print it without a traceback."""

import sys
from contextlib import contextmanager


class UserError(Exception):
    """Bad input the user can fix (file, row and field in the message)."""


@contextmanager
def exit_on_user_error():
    """Turn a UserError into one line on stderr and exit status 2."""
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: finished work is saved; re-run the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None



def closest(name: str, known) -> str | None:
    """The known name nearest to a misspelt one: `closest("mmlu-pro", ["mmlu", "mmlu_pro"])` -> "mmlu_pro"."""
    import difflib

    known = list(known)
    near = difflib.get_close_matches(name.replace("-", "_"), known, n=1) or difflib.get_close_matches(name, known, n=1)
    return near[0] if near else None
