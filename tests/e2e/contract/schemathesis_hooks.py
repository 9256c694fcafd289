"""schemathesis hooks for `tests/e2e/contract.rs` (loaded through SCHEMATHESIS_HOOKS).

One rule of the API cannot be written in JSON Schema: times relative to *now*. An override's
`expires_at` must lie after now and at most 90 days ahead, a provisioned entitlement's
`expires_at` after now, and a test clock only moves forward (`to` not before its time) — where
"now" is the server's clock or the tenant's test clock, which schemathesis creates and moves
itself. A schema-valid time outside that window is refused with 422 naming the field; that one
refusal is not a contract break, so it alone is dropped from "schema-valid request rejected".
Every other check, and every other 422 of these routes, still counts.
"""

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

# (operation, the field whose time is relative to now)
RELATIVE_TIMES = {
    ("POST", "/v1/tenants"): "expires_at",
    ("POST", "/v1/tenants/{tenant_id}/overrides"): "expires_at",
    ("POST", "/v1/test-clocks/{clock_id}/advance"): "to",
}

VALIDATION_FAILED = "https://tierflow.dev/problems/validation-failed"


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 422:
        return True
    field = RELATIVE_TIMES.get((case.operation.method.upper(), case.operation.path))
    try:
        problem = response.json()
    except ValueError:
        return True
    is_time_window = (
        field is not None
        and problem.get("type") == VALIDATION_FAILED
        and problem.get("field") == field
    )
    return not is_time_window
