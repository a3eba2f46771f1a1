"""``coupon ledger witness``: run a C2SP tlog-witness that cosigns the logs it trusts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._app import EPILOG
from ._ledger_cmds import ledger_app

__all__ = ["witness"]


@ledger_app.command(epilog=EPILOG, short_help="Run a tlog-witness that cosigns checkpoints.")
def witness(
    key_file: Annotated[
        Path, typer.Option("--key-file", help="The witness's private key (created, mode 0600).")
    ],
    name: Annotated[
        str, typer.Option("--name", help="The witness's key name, e.g. witness.example/w1.")
    ],
    log_key: Annotated[
        list[str],
        typer.Option("--log-key", help="A log's verifier key (repeat); its name is the origin."),
    ],
    state: Annotated[
        Path, typer.Option("--state", help="SQLite file of the newest cosigned checkpoints.")
    ] = Path("witness.db"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8790,
) -> None:
    """Run a witness (c2sp.org/tlog-witness): POST /add-checkpoint.

    The witness checks each checkpoint's signature against the log keys it trusts and its
    consistency with the newest checkpoint it cosigned for that log, then answers with a
    timestamped cosignature (c2sp.org/tlog-cosignature). It never cosigns a rollback or a
    fork. Its verifier key is printed to stderr at start; give it to the log
    (COUPON_LEDGER_WITNESSES="<witness vkey> <url>") and to the auditors.
    """
    from coupon.ledger_service._witness import serve_witness

    serve_witness(
        key_file=key_file, name=name, log_vkeys=log_key, state_path=state, host=host, port=port
    )
