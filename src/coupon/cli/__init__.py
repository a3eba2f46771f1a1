"""The ``coupon`` command line: ``main(argv)`` parses, calls the public API and prints.

Exit codes (the same for every subcommand, see ``docs/cli.md``):

    0  success; for ``verify``, the request is allowed
    1  denied, or an invalid token, key or request: a ``CouponError`` ("FAIL: CPN-..." on stderr)
    2  usage error, from the parser
    3  environment error: a file cannot be read or written, a URL cannot be fetched

Like sigstore's ``_cli.py``, a ``CouponError`` is caught once, here, and printed with its
``diagnostics()``; ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Sequence
from typing import Final

import typer

from coupon.errors import CouponError

from ._app import (
    EXIT_DENIED,
    EXIT_ENVIRONMENT,
    EXIT_OK,
    EnvironmentProblem,
    app,
    error_document,
    state,
)

__all__ = ["app", "main"]

#: Importing a command module registers its commands; ``--help`` lists them in this order.
#: A new command module (``up``, ``revoke``, ``ledger``) adds its name here.
COMMAND_MODULES: Final = (
    "_up_cmd",
    "_keys_cmds",
    "_token_cmds",
    "_inspect_cmds",
    "_verify_cmd",
    "_dpop_cmds",
    "_remote_cmds",
    "_drill_cmd",
    "_ledger_cmds",
    "_ledger_audit_cmds",
    "_witness_cmd",
    "_gateway_cmd",
    "_certs_cmds",
)
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_DENIED


def _fail(exc: CouponError) -> int:
    if state.json and not state.emitted:
        state.emit({"ok": False, "error": error_document(exc)})
    typer.echo(f"FAIL: {exc.code.code} {exc.code.title}", err=True)
    typer.echo(exc.diagnostics(), err=True)
    for line in state.footer:
        typer.echo(line, err=True)
    if state.verbose:
        traceback.print_exception(exc)
    return EXIT_DENIED


def _environment(exc: EnvironmentProblem) -> int:
    typer.echo(f"ERROR: {exc}", err=True)
    if state.verbose:
        traceback.print_exception(exc)
    return EXIT_ENVIRONMENT


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``coupon`` command line with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 denied or invalid input, 2 usage, 3 environment.
    """
    state.reset()
    command = typer.main.get_command(app)
    try:
        # standalone_mode lets click print usage errors and --help itself, then SystemExit.
        command.main(args=None if argv is None else list(argv), prog_name="coupon")
    except SystemExit as exc:
        return _exit_code(exc.code)
    except CouponError as exc:
        return _fail(exc)
    except EnvironmentProblem as exc:
        return _environment(exc)
    return EXIT_OK
