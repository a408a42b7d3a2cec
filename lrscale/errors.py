"""One error path for every entry point: a bad input is one line on stderr and exit 2.

The convention: code that checks what the user gave (a config field, a flag, a
file, a directory) raises ``UserError`` (a ``ValueError``, so callers that catch
``ValueError`` keep working) with a message of the form
``config.<field> ...: <how to fix>``. ``run_main(main)`` runs an absl main and
turns what the user can fix into one line::

    error: config.lr must be a positive finite learning rate, got -0.1.

and exit status 2. Exactly these count as the user's to fix:

* ``UserError`` and its subclasses (``MissingInput`` for a named input file or
  directory that does not exist; ``Interrupted`` is separate, see below);
* ``OSError`` whose errno says the environment refused (disk full, quota,
  permission, read-only filesystem, a path component that is a file): the
  message names the file and the fix;
* ``absl.app.UsageError`` raised by a main about its arguments;
* flag and config-file parsing errors (absl ``flags.Error``, raised while
  ``--config`` is loaded).

Every other exception is a bug and keeps its full traceback. A ``ValueError``
that validation code raises is mapped into ``UserError`` where it is raised
(``as_user_errors``), not by catching every ``ValueError`` at the top, so a
``ValueError`` from deep inside a library still shows where it came from.
``--verbose_errors`` (or ``LRSCALE_VERBOSE_ERRORS=1``) shows the traceback of
user errors too. Errors raised while JAX traces a function carry JAX's
"removed its internal frames" note and an ``UnfilteredStackTrace`` cause; the
one line is the exception's own message, so neither shows.

``Interrupted`` (SIGTERM, Ctrl-C) is raised by the training loop after it has
checkpointed; it prints how to resume and exits 128 + signal number.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import traceback
from typing import Any, Callable, TypeVar

USER_ERROR_EXIT = 2
_ENV_ERRNOS = {
  errno.ENOSPC: "no space left on the device: free some space or use another directory",
  errno.EDQUOT: "disk quota exceeded: free some space or use another directory",
  errno.EACCES: "permission denied: use a directory you can write to",
  errno.EPERM: "operation not permitted: use a directory you can write to",
  errno.EROFS: "read-only filesystem: use a writable directory",
  errno.ENOTDIR: "a component of the path is a file, not a directory: use another path",
  errno.EISDIR: "is a directory, expected a file",
}

F = TypeVar("F", bound=Callable[..., Any])


class UserError(ValueError):
  """A bad input the user can fix: the message names the field/file and the fix."""


class MissingInput(UserError, FileNotFoundError):
  """A named input (file, directory) does not exist."""


class Interrupted(Exception):
  """Training stopped by a signal after checkpointing; rerunning resumes it."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


def as_user_errors(fn: F) -> F:
  """Decorates a validation function: the ``ValueError``s it raises are ``UserError``s."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    try:
      return fn(*args, **kwargs)
    except UserError:
      raise
    except ValueError as err:
      raise UserError(str(err)) from err

  return wrapped  # type: ignore[return-value]


def is_user_error(err: BaseException) -> bool:
  """Whether ``err`` is the user's to fix (see the module docstring for the list)."""
  if isinstance(err, UserError):
    return True
  from absl import app  # pylint: disable=g-import-not-at-top

  if isinstance(err, app.UsageError):  # a main's own complaint about its arguments
    return True
  if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
    return err.errno in _ENV_ERRNOS
  return False


def one_line(err: BaseException) -> str:
  """The message of a user error as one line (no notes, no cause, no traceback)."""
  if isinstance(err, OSError) and not isinstance(err, UserError) and err.errno in _ENV_ERRNOS:
    where = err.filename or ""
    text = f"{where}: {_ENV_ERRNOS[err.errno]}" if where else _ENV_ERRNOS[err.errno]
  else:
    text = str(err) if err.args else type(err).__name__
  return " ".join(text.split())


def verbose() -> bool:
  """Whether user errors show their traceback too."""
  if os.environ.get("LRSCALE_VERBOSE_ERRORS", "") not in ("", "0"):
    return True
  from absl import flags  # pylint: disable=g-import-not-at-top

  return "verbose_errors" in flags.FLAGS and bool(flags.FLAGS["verbose_errors"].value)


def report(err: BaseException, stream=None) -> int:
  """Prints a user error or an interrupt in one line; returns the exit status."""
  stream = stream or sys.stderr
  if verbose():
    traceback.print_exception(err, file=stream)
  if isinstance(err, Interrupted):
    print(one_line(err), file=stream)
    return err.exit_code
  if isinstance(err, KeyboardInterrupt):
    print("interrupted (Ctrl-C).", file=stream)
    return 128 + signal.SIGINT
  print(f"error: {one_line(err)}", file=stream)
  return USER_ERROR_EXIT


def handle(main: Callable[..., Any]) -> Callable[..., Any]:
  """Wraps ``main(argv)``: user errors and interrupts exit as ``report`` says."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except (Interrupted, KeyboardInterrupt) as err:
      sys.stderr.flush()
      raise SystemExit(report(err)) from None
    except Exception as err:  # pylint: disable=broad-except
      if not is_user_error(err):
        raise
      raise SystemExit(report(err)) from None

  return wrapped


def _flag_error(text: str) -> SystemExit:
  print(
    f"error: {text}: fix the flag or the config file; --helpshort lists flags.", file=sys.stderr
  )
  return SystemExit(USER_ERROR_EXIT)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a parse error (a bad --config file too) as one line."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  try:
    rest = flags.FLAGS(argv)
  except flags.Error as err:
    if verbose():
      print(str(err), file=sys.stderr)
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    head = lines[0].rstrip(":") if lines else type(err).__name__
    # A config file that failed to load: the head names the flag, the last line
    # is the config's own exception ("ValueError: boom").
    raise _flag_error(head + (f" ({lines[-1]})" if len(lines) > 1 else "")) from None
  except Exception as err:  # pylint: disable=broad-except
    # Flag parsing runs only the --config files: whatever they raise is theirs.
    if verbose():
      traceback.print_exception(err, file=sys.stderr)
    where = f"{err.filename} line {err.lineno}: " if isinstance(err, SyntaxError) else ""
    raise _flag_error(
      f"a --config file failed to load ({where}{type(err).__name__}: {one_line(err)})"
    ) from None
  for name in flags.FLAGS:
    value = flags.FLAGS[name].value
    if type(value).__name__ == "_ErrorConfig":  # ml_collections: the file could not be read
      cause = str(object.__getattribute__(value, "_error")).strip().splitlines()
      given = flags.FLAGS[name].serialize().split("=", 1)[-1]
      raise _flag_error(f"--{name}={given}: cannot load it ({cause[-1].strip() if cause else ''})")
  return rest


def run_main(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
  """``absl.app.run(main)`` with the error convention above (every lrscale main)."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  if "verbose_errors" not in flags.FLAGS:
    flags.DEFINE_bool(
      "verbose_errors", False, "Show tracebacks for bad inputs too (also LRSCALE_VERBOSE_ERRORS=1)."
    )
  app.run(handle(main), argv=argv, flags_parser=_parse_flags)
