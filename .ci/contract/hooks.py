"""Schemathesis hooks for .ci/contract/run: one check, `refusals_are_configuration`.

The document describes every project, but some of what a request names is decided by the
project's cascade.toml: event types and their fields, catalogue attributes, feature views,
pipelines and their limits. A schema-valid request that names something this project does not
declare is rightly refused with 400, so schemathesis.toml lets `positive_data_acceptance` take a
400 on those operations. This check makes that exception narrow: a schema-valid request may be
refused only with the operation's configuration-dependent error code, and only for fields the
configuration decides (or for the two limits JSON Schema cannot state, below). Any other refusal
of a schema-valid request is a mismatch between the document and the server.
"""

import json
import re

import schemathesis

# Limits the document states in words because JSON Schema cannot: ids are at most 256 *bytes*
# (maxLength counts characters), and an RFC 3339 `date-time` may name a year before 1970.
DOCUMENTED_LIMITS = ("longer than 256 bytes", "before 1970 or after 9999")

# Refusals whose cause is always the configuration, whatever the operation: a record dated past
# the project's time horizon.
ANY_OPERATION = {"time_ahead"}


def _attributes(field):
    return field == "attributes" or field.startswith("attributes.")


def _event_field(field):
    # `[n]` prefixes are not used: the batch position is the detail's `index`.
    return field in ("type", "user", "item") or field == "fields" or field.startswith("fields.")


# Per operation: error code -> which (field, reason) a configuration may refuse.
CONFIGURED = {
    "POST /v1/events": {"invalid_events": lambda f, r: _event_field(f)},
    "PUT /v1/items/{id}": {"invalid_item": lambda f, r: _attributes(f)},
    "PUT /v1/users/{id}": {"invalid_user": lambda f, r: _attributes(f)},
    "POST /v1/features": {
        "unknown_feature": lambda f, r: re.fullmatch(r"features\[\d+\]", f) is not None,
        # A key part a requested view needs (`entities[0].device`); not `entities[0].fields.x`.
        "invalid_feature_request": lambda f, r: re.fullmatch(r"entities\[\d+\]\.[^.]+", f) is not None,
    },
    "POST /v1/recommendations": {
        "unknown_pipeline": lambda f, r: f == "pipeline",
        "invalid_recommendation_request": lambda f, r: f == "k" and ".max_k)" in r,
    },
    "POST /v1/rank": {
        "unknown_pipeline": lambda f, r: f == "pipeline",
        "invalid_recommendation_request": lambda f, r: f == "items" and ".candidates)" in r,
    },
}


@schemathesis.check
def refusals_are_configuration(ctx, response, case):
    """A schema-valid request is refused only for what the project's configuration decides."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    allowed = CONFIGURED.get(case.operation.label)
    if allowed is None:
        return None  # positive_data_acceptance itself refuses every 400 here
    try:
        error = json.loads(response.text)["error"]
        code, details = error["code"], error.get("details", [])
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"a 400 without the JSON error shape: {response.text[:200]!r}")
    if code in ANY_OPERATION:
        return None
    accepts = allowed.get(code)
    if accepts is None:
        raise AssertionError(
            f"a schema-valid request was refused with `{code}`, which no configuration explains "
            f"(expected one of {sorted(allowed)}): {error.get('message')}"
        )
    if not details:
        raise AssertionError(f"`{code}` without details naming the field: {error.get('message')}")
    for d in details:
        field, reason = d.get("field", ""), d.get("reason", "")
        if not accepts(field, reason) and not any(limit in reason for limit in DOCUMENTED_LIMITS):
            raise AssertionError(
                f"a schema-valid request was refused for `{field}` ({reason}), which the document allows"
            )
    return None
