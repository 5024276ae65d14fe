"""Who may see a thread, for a LangGraph server whose callers are not its operator.

An example of LangGraph custom auth (``langgraph_sdk.Auth``), wired in
``deploy/langgraph.json``. Callers present a bearer token; the operator lists the
tokens in ``RLM_AUTH_TOKENS`` (``user=token`` pairs, comma separated). Every thread,
and so every run and state read on it, belongs to the user who created it: another
user's thread answers 404, as if it did not exist. Assistants are shared and read-only;
the store, where runs keep their contexts and cell records, is closed to the API.
See docs/security.md ("Deploying as a server").
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from langgraph_sdk import Auth

auth = Auth()


def users_by_token() -> dict[str, str]:
    """``RLM_AUTH_TOKENS`` as token -> user; read per request, so a rotated token counts."""
    pairs = (item.partition("=") for item in os.environ.get("RLM_AUTH_TOKENS", "").split(","))
    return {token.strip(): user.strip() for user, _, token in pairs if user.strip() and token}


@auth.authenticate
async def authenticate(authorization: str | None) -> str:
    """The user a bearer token belongs to; anything else is a 401."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and token:
        for known, user in users_by_token().items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return user
    raise Auth.exceptions.HTTPException(status_code=401, detail="unknown or missing bearer token")


def owned(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    """Stamp what a caller creates with their identity; let them see only what is theirs."""
    owner = {"owner": ctx.user.identity}
    if isinstance(value, dict) and ctx.action in ("create", "create_run", "update"):
        value.setdefault("metadata", {}).update(owner)
    return owner


@auth.on.threads
async def own_threads(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    """Each thread is its creator's; runs are thread actions (``create_run``), so alike."""
    return owned(ctx, value)


@auth.on.crons
async def own_crons(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    """Crons start runs on threads: the same rule as threads."""
    return owned(ctx, value)


@auth.on.assistants
async def shared_assistants(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """Every caller may read and use the graph's assistants; none may change them."""
    if ctx.action in ("read", "search"):
        return True
    raise Auth.exceptions.HTTPException(status_code=403, detail="assistants are read-only")


@auth.on.store
async def no_store(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """The store holds every run's contexts and cell records: no caller reads it directly."""
    raise Auth.exceptions.HTTPException(status_code=403, detail="the store is not served")
