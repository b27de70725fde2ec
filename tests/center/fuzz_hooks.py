"""Schemathesis hooks for `test_openapi_conformance` (loaded through SCHEMATHESIS_HOOKS).

A job script the fuzzer makes up is replaced by `true` before it is sent, so nothing it
invents runs as the test's user. Only a valid one is replaced: an invalid script must still
reach the center, to be refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from kaic.models.limits import MAX_SCRIPT_LENGTH


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    body = case.body
    if case.method.upper() == "POST" and case.path == "/v1/jobs" and isinstance(body, dict):
        run = body.get("run")
        if isinstance(run, str) and 0 < len(run) <= MAX_SCRIPT_LENGTH and "\0" not in run:
            body["run"] = "true"
