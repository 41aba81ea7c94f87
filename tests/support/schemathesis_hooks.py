"""schemathesis hooks for the conformance run (loaded through ``SCHEMATHESIS_HOOKS``).

What they change is test data, never a rule: every value they put in is valid by the spec.

- Each API area gets its own token from the environment (``ST_CLIENT``, ``ST_SITE``,
  ``ST_ADMIN``; never on a command line), through an auth provider, so schemathesis knows
  where auth was applied and can also test calls without it.
- Resumable uploads are ``application/offset+octet-stream``: raw bytes, like octet-stream.
- Long polls may ask for up to 50 s; the run shortens any wait to ``ST_MAX_WAIT`` seconds, so
  a poll with nothing to wait for does not stall a bounded run.
- A job is only accepted for a site the broker serves (its state, not a schema rule): a
  well-formed ``site`` becomes the one the test registered (``ST_SITE_NAME``); a malformed
  one is kept, so the refusal of bad names is still tested.
- Names within ``inputs`` and ``results`` are unique (JSON Schema's ``uniqueItems`` only
  compares whole items): a repeated name gets a suffix that keeps it valid.
- A result declared empty (``Upload-Length: 0``) can only have the SHA-256 of no bytes, a rule
  across two headers that OpenAPI cannot state: a well-formed digest becomes that one.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis
from schemathesis.transport.serialization import serialize_binary

from broker.auth import SUBJECT_NAME
from broker.validation import EMPTY_SHA256

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@schemathesis.serializer("application/offset+octet-stream")
def _raw_bytes(ctx: Any, value: Any) -> dict[str, Any]:
    return {"data": serialize_binary(value)}


# Which token each area of the API takes; the first matching prefix wins.
_LEGACY = "/mi-distcomp-api/"
_SCOPES = (
    ("/api/v1/agent/", "ST_SITE"), ("/api/v1/admin/", "ST_ADMIN"), ("/metrics", "ST_ADMIN"),
    ("/api/v1/jobs", "ST_CLIENT"), (_LEGACY + "get-calcinfo", "ST_ADMIN"),
    *((_LEGACY + step, "ST_SITE") for step in (
        "calc-request", "calc-params", "calc-start", "calc-end", "send-results", "end-send")),
    (_LEGACY, "ST_CLIENT"),
)  # fmt: skip


@schemathesis.auth()
class _AreaTokens:
    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> dict[str, str]:
        return {name: os.environ[name] for _, name in _SCOPES}

    def set(self, case: schemathesis.Case, data: dict[str, str], ctx: schemathesis.AuthContext
            ) -> None:  # fmt: skip
        for prefix, name in _SCOPES:
            if case.path.startswith(prefix):
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data[name]}"}
                return


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: Any) -> None:
    _short_wait(case)
    _served_site(case)
    _unique_names(case)
    _empty_digest(case)


def _short_wait(case: schemathesis.Case) -> None:
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 0:
        case.query = {**case.query, "wait": min(wait, float(os.environ.get("ST_MAX_WAIT", "0.2")))}


def _served_site(case: schemathesis.Case) -> None:
    if (case.method.upper(), case.path) != ("POST", "/api/v1/jobs"):
        return
    site = case.body.get("site") if isinstance(case.body, dict) else None
    if isinstance(site, str) and SUBJECT_NAME.fullmatch(site):
        case.body = {**case.body, "site": os.environ["ST_SITE_NAME"]}


def _unique_names(case: schemathesis.Case) -> None:
    if not isinstance(case.body, dict):
        return
    for key in ("inputs", "results"):
        files = case.body.get(key)
        if not isinstance(files, list):
            continue
        seen: set[object] = set()
        for index, item in enumerate(files):
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                if item["name"] in seen:
                    files[index] = {**item, "name": f"{item['name'][:240]}~{index}"}
                seen.add(files[index]["name"])


def _empty_digest(case: schemathesis.Case) -> None:
    headers = case.headers or {}
    digest = headers.get("Upload-SHA256")
    if str(headers.get("Upload-Length")) == "0" and isinstance(digest, str) and _HEX64.fullmatch(
        digest
    ):
        case.headers = {**headers, "Upload-SHA256": EMPTY_SHA256}
