"""Verifies a webhook with the reference Standard Webhooks library.

Reads {"secret": "whsec_...", "headers": {...}, "body": "..."} as JSON on
stdin; prints "verified" and exits 0, or prints the library's error and
exits 1.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook

msg = json.load(sys.stdin)
try:
    Webhook(msg["secret"]).verify(msg["body"], msg["headers"])
except Exception as e:  # the library raises WebhookVerificationError
    print(f"{type(e).__name__}: {e}")
    sys.exit(1)
print("verified")
