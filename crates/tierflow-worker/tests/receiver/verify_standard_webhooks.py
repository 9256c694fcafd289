"""Verifies recorded webhook deliveries with the reference Standard Webhooks library, as a
receiver would. Reads {"secrets": [...], "deliveries": [{"id", "timestamp", "signature",
"body"}]} on stdin; prints {"verified": [[true|false per secret] per delivery], "errors": [...]}.
Used by crates/tierflow-worker/tests/webhooks.rs; `pip install standardwebhooks` (.ci/run does)."""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
hooks = [Webhook(secret) for secret in request["secrets"]]
verified, errors = [], []
for d in request["deliveries"]:
    headers = {
        "webhook-id": d["id"],
        "webhook-timestamp": d["timestamp"],
        "webhook-signature": d["signature"],
    }
    row = []
    for hook in hooks:
        try:
            hook.verify(d["body"], headers)
            row.append(True)
        except WebhookVerificationError as e:
            row.append(False)
            errors.append(f"{d['id']}: {e}")
    verified.append(row)
json.dump({"verified": verified, "errors": errors}, sys.stdout)
