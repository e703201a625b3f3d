"""Sets up and reads lifecycle test buckets with boto3 (an independent client).

usage: lifecycle.py ENDPOINT_URL COMMAND ARGS...
  lock-bucket BUCKET                     a versioned bucket with Object Lock
  put-lifecycle BUCKET FILE              PutBucketLifecycleConfiguration (JSON rules file)
  legal-hold BUCKET KEY VERSION          legal hold ON
  retain BUCKET KEY VERSION UNTIL        GOVERNANCE retention until UNTIL (ISO 8601)
  open-upload BUCKET KEY                 CreateMultipartUpload (left open)
  state BUCKET                           JSON: {"entries": {KEY: [[version_id, is_marker,
                                         is_latest, storage_class]...]}, "uploads": [KEY...]}
"""
import json
import sys

import boto3
from botocore.config import Config


def client(url):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKTEST",
        aws_secret_access_key="SKTEST/secret",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


def state(s3, bucket):
    entries = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
            for v in page.get(kind, []):
                row = [v["VersionId"], marker, v["IsLatest"], v.get("StorageClass", "")]
                entries.setdefault(v["Key"], []).append(row)
    for e in entries.values():
        e.sort()
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return {"entries": entries, "uploads": sorted(uploads)}


def main(url, command, *args):
    s3 = client(url)
    if command == "lock-bucket":
        s3.create_bucket(Bucket=args[0], ObjectLockEnabledForBucket=True)
    elif command == "put-lifecycle":
        with open(args[1]) as f:
            s3.put_bucket_lifecycle_configuration(Bucket=args[0], LifecycleConfiguration=json.load(f))
    elif command == "legal-hold":
        s3.put_object_legal_hold(
            Bucket=args[0], Key=args[1], VersionId=args[2], LegalHold={"Status": "ON"}
        )
    elif command == "retain":
        s3.put_object_retention(
            Bucket=args[0],
            Key=args[1],
            VersionId=args[2],
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": args[3]},
        )
    elif command == "open-upload":
        print(s3.create_multipart_upload(Bucket=args[0], Key=args[1])["UploadId"])
    elif command == "state":
        print(json.dumps(state(s3, args[0]), sort_keys=True))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(*sys.argv[1:])
