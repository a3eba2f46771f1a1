"""``coupon keys drill``: the key-rotation drill against a running Authority."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Annotated

import typer

from ._app import EPILOG, EXIT_DENIED, EnvironmentProblem, JsonOpt, setup
from ._remote import DEFAULT_URL, ApiKeyOpt, UrlOpt, _credential
from ._remote_cmds import keys_app

__all__ = ["keys_drill"]


@keys_app.command("drill", epilog=EPILOG)
def keys_drill(
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Also roll the coupon keys back and verify again.")
    ] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for each new checkpoint.", min=1, max=600)
    ] = 15.0,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Rotation drill: record the keys; issue coupon A; rotate the coupon keys and the Ledger
    key; issue B; verify A and B (JWKS and the verify endpoint) and that the newest checkpoint
    verifies with the old and the new Ledger keys and is consistent with the one before the
    drill; with --rollback, roll back, issue C and verify all again. Prints the transcript;
    exits 1 at the first failed step. It rotates the keys for real: run it where that is
    intended (admin)."""
    import httpx

    from ._drill import Drill, Step

    out = setup(json_=json_, verbose=False)
    base = (url or os.environ.get("COUPON_URL") or DEFAULT_URL).rstrip("/")

    def report(step: Step) -> None:
        if not out.json:
            out.data(step.line())

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not out.json:
        out.data(f"coupon keys drill{' --rollback' if rollback else ''} against {base} ({started})")
    headers = {"X-API-Key": _credential(api_key)}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10.0, trust_env=False) as client:
            drill = Drill(client, rollback=rollback, report=report, wait=wait)
            passed = drill.run()
    except httpx.HTTPError as exc:
        raise EnvironmentProblem(f"cannot reach the Authority at {base}: {exc}") from exc
    if out.json:
        out.emit(
            {
                "ok": passed,
                "url": base,
                "started": started,
                "rollback": rollback,
                "steps": [dataclasses.asdict(step) for step in drill.steps],
            }
        )
    if not passed:
        failed = drill.steps[-1]
        typer.echo(f"FAIL: drill failed at step {failed.number} ({failed.name})", err=True)
        raise typer.Exit(EXIT_DENIED)
    out.ok(f"drill passed: {len(drill.steps)} steps")
