"""User-facing errors: one clear line, exit code 2, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

USER_ERROR_EXIT_CODE = 2

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """Bad input from the user (config, list file, image, command line).

    The message is shown as is, so it must name the file, line or key and say what was
    expected.
    """


def exit_on_user_error(main: F) -> F:
    """Wrap a command-line entry point: a UserError becomes `error: <msg>` and exit 2."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(USER_ERROR_EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]
