"""Prints, as JSON, what an S3 bucket holds, read with boto3 (an independent client: the
tests check replicas with it, not only with backbeat's own client and XML parser).

usage: snapshot.py ENDPOINT_URL BUCKET

{"KEY": {"versions": [{"size", "sha256", "metadata", "tags", "source_version"}...],
         "delete_markers": N, "latest_is_marker": bool}}  (versions newest first)
"""
import hashlib
import json
import sys

import boto3
from botocore.config import Config


def main(url, bucket):
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKTEST",
        aws_secret_access_key="SKTEST/secret",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )
    out = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            entry = out.setdefault(v["Key"], {"versions": [], "delete_markers": 0, "latest_is_marker": False})
            entry["versions"].append(describe(s3, bucket, v))
        for m in page.get("DeleteMarkers", []):
            entry = out.setdefault(m["Key"], {"versions": [], "delete_markers": 0, "latest_is_marker": False})
            entry["delete_markers"] += 1
            entry["latest_is_marker"] |= bool(m.get("IsLatest"))
    json.dump(out, sys.stdout, sort_keys=True)


def describe(s3, bucket, v):
    got = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    body = got["Body"].read()
    meta = dict(got.get("Metadata", {}))
    source_version = meta.pop("backbeat-source-version-id", None)
    # what backbeat records of the source (ETag, LastModified, sequencer, origin): not the
    # user's
    for k in [k for k in meta if k.startswith("backbeat-")]:
        meta.pop(k)
    for h in ("ContentType", "CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage"):
        if got.get(h):
            meta[h] = got[h]
    tags = s3.get_object_tagging(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["TagSet"]
    return {
        "version_id": v["VersionId"],
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "metadata": meta,
        "tags": sorted((t["Key"], t["Value"]) for t in tags),
        "source_version": source_version,
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
