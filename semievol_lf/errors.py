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
