"""Validates webhook payloads (a JSON array on stdin) against
revoker/alert-webhook.schema.json; prints every error and exits 1 if any."""
import json
import pathlib
import sys

from jsonschema import Draft202012Validator

schema_path = pathlib.Path(__file__).resolve().parents[2] / "revoker" / "alert-webhook.schema.json"
validator = Draft202012Validator(json.loads(schema_path.read_text()))
errors = [f"payload {i}: {e.json_path}: {e.message}" for i, p in enumerate(json.load(sys.stdin)) for e in validator.iter_errors(p)]
print("\n".join(errors) or "valid")
sys.exit(1 if errors else 0)
