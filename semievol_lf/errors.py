"""The one exception type for user mistakes, and the entry points' exits: a user mistake is one line without a
traceback, an interruption (Ctrl-C or SIGTERM) the resume hint."""

import signal
import sys
import threading
from contextlib import contextmanager


class UserError(Exception):
    """Bad input the user can fix (file, row and field in the message)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill PID`, a scheduler's stop), raised like Ctrl-C so that it unwinds the same way:
    finished work kept, child processes stopped (children.run)."""


def _terminated(signum, frame):
    raise Terminated


@contextmanager
def exit_on_user_error():
    """Turn a UserError into one line on stderr and exit status 2, and an interruption into the resume
    hint and exit status 130 (Ctrl-C) or 143 (SIGTERM, 128 + 15 as a shell reports it)."""
    main = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as err:
        print("interrupted: finished work is saved; re-run the same command to resume", file=sys.stderr)
        raise SystemExit(143 if isinstance(err, Terminated) else 130) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)



def closest(name: str, known) -> str | None:
    """The known name nearest to a misspelt one: `closest("mmlu-pro", ["mmlu", "mmlu_pro"])` -> "mmlu_pro"."""
    import difflib

    known = list(known)
    near = difflib.get_close_matches(name.replace("-", "_"), known, n=1) or difflib.get_close_matches(name, known, n=1)
    return near[0] if near else None
