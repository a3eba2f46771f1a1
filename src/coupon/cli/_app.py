"""The ``coupon`` Typer app, its shared options and the output helpers every command uses.

Adding a command from another module::

    from coupon.cli._app import EPILOG, JsonOpt, VerboseOpt, app, setup

    @app.command(epilog=EPILOG)
    def revoke(jti: str, json_: JsonOpt = False, verbose: VerboseOpt = False) -> None:
        \"\"\"Revoke a coupon.\"\"\"
        out = setup(json_=json_, verbose=verbose)
        ...

A group is a second ``typer.Typer`` added with ``app.add_typer(group, name="ledger")`` (see
``_dpop_cmds.py``). Then add the module's name to ``COMMAND_MODULES`` in
``coupon/cli/__init__.py``: importing it is what registers its commands.

Output rules (STYLE, "CLI: imitate sigstore"): data goes to stdout; "OK:", "FAIL:" and
"WARNING:" lines go to stderr. ``CouponError`` is never caught in a command: it goes up to
:func:`coupon.cli.main`, which prints it once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import typer

from coupon.errors import CouponError

__all__ = [
    "EPILOG",
    "EXIT_DENIED",
    "EXIT_ENVIRONMENT",
    "EXIT_OK",
    "EXIT_USAGE",
    "EnvironmentProblem",
    "JsonOpt",
    "NowOpt",
    "Output",
    "TokenArg",
    "VerboseOpt",
    "app",
    "error_document",
    "setup",
    "state",
]

EXIT_OK: Final = 0
EXIT_DENIED: Final = 1
EXIT_USAGE: Final = 2
EXIT_ENVIRONMENT: Final = 3

# "\b" keeps click from re-wrapping the table into one paragraph.
EPILOG: Final = """Exit codes:

\b
  0  success (verify: allowed)
  1  denied, or an invalid token, key or request: "FAIL: CPN-..." on stderr
  2  usage error (bad or missing option or argument)
  3  environment error (a file cannot be read or written, a URL cannot be fetched)
"""

app: Final = typer.Typer(
    name="coupon",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: stable text that docs and a README check can diff.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print a JSON document on stdout instead of text."),
]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="On an error, also print the Python traceback."),
]
NowOpt = Annotated[
    int | None,
    typer.Option(
        "--now",
        metavar="EPOCH",
        help="The current time in seconds since the epoch (default: the clock).",
    ),
]
TokenArg = Annotated[
    str,
    typer.Argument(
        metavar="TOKEN",
        help='The coupon or chain ("root~link1~..."), a file holding it, or "-" for stdin.',
    ),
]


class EnvironmentProblem(Exception):
    """A file cannot be read or written, or a URL cannot be fetched: exit code 3."""


@dataclass
class Output:
    """What the running command asked for, and what it has printed so far.

    Module state, not a click context object: :func:`coupon.cli.main` handles errors after
    click has torn its context down, and still needs to know about ``--json``/``--verbose``.
    """

    json: bool = False
    verbose: bool = False
    emitted: bool = False
    footer: list[str] = field(default_factory=list)

    def reset(self) -> None:
        """Forget the previous run (``main`` may run many times in one process)."""
        self.json = self.verbose = self.emitted = False
        self.footer = []

    def data(self, text: str) -> None:
        """Write one line of data to stdout."""
        typer.echo(text)

    def emit(self, document: Mapping[str, Any]) -> None:
        """Write ``document`` as indented JSON to stdout."""
        typer.echo(json.dumps(document, indent=2))
        self.emitted = True

    def ok(self, message: str) -> None:
        """Write an ``OK:`` line to stderr."""
        typer.echo(f"OK: {message}", err=True)

    def warn(self, message: str) -> None:
        """Write a ``WARNING:`` line to stderr."""
        typer.echo(f"WARNING: {message}", err=True)

    def note(self, message: str) -> None:
        """Write a line for humans to stderr."""
        typer.echo(message, err=True)


state = Output()


def setup(*, json_: bool, verbose: bool) -> Output:
    """Record the command's output options (first thing every command does)."""
    state.json = json_
    state.verbose = state.verbose or verbose
    return state


def error_document(exc: CouponError) -> dict[str, Any]:
    """The ``error`` member of a JSON document for a ``CouponError``."""
    return {
        "code": exc.code.code,
        "title": exc.code.title,
        "reason": exc.reason,
        "step": exc.step,
        "protocol": exc.code.protocol,
        "status": exc.code.status,
    }


def _version(value: bool) -> None:
    if value:
        from coupon import __version__

        typer.echo(f"coupon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: VerboseOpt = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Coupon Authority: mint, attenuate, inspect and verify coupons (short-lived,
    key-bound capability tokens) and DPoP proofs.

    A chain token is "root~link1~link2". A TOKEN argument may be the token itself, a file
    holding it, or "-" for stdin.
    """
    state.verbose = verbose
