"""Drives moto's IAM for the aws_iam tests, with boto3 (moto's dependency).

    python iam.py ENDPOINT create USER   -> prints the new access key id
    python iam.py ENDPOINT status USER KEY_ID -> prints Active or Inactive
"""
import sys

import boto3

endpoint, command, user = sys.argv[1], sys.argv[2], sys.argv[3]
iam = boto3.client(
    "iam",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
if command == "create":
    iam.create_user(UserName=user)
    print(iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"])
elif command == "status":
    keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    print(next(k["Status"] for k in keys if k["AccessKeyId"] == sys.argv[4]))
else:
    sys.exit(f"unknown command {command}")
