"""Sets up and reads back what a replica carries beyond its bytes, with boto3 (an
independent client): Object Lock, encryption, storage class, tags and ACLs.

usage: fidelity.py ENDPOINT_URL COMMAND JSON_ARGS
  bucket    {"bucket", "lock": bool}                 versioned bucket (Object Lock optional)
  put       {"bucket", "key", "size", "opts": {...}} prints {"version_id"}; opts are
            put_object keywords, "RetainDays" standing for ObjectLockRetainUntilDate
  tags      {"bucket", "key", "version_id", "tags": [[k, v]...]}  (empty: delete the tags)
  acl       {"bucket", "key", "version_id", "acl"}   a canned ACL
  retention {"bucket", "key", "version_id", "mode", "days"}
  legalhold {"bucket", "key", "version_id", "on": bool}
  describe  {"bucket"}   {"KEY": [{version_id, source_version, size, storage_class, sse,
            kms_key_id, lock_mode, retain_until, legal_hold, tags, grants}...]} newest first
  delete    {"bucket", "key", "version_id"}          prints {"error": CODE or null}
  fill      {"bucket", "prefix", "count", "size"}  puts keys PREFIX000000... (16 at once)
  unlink    {"bucket", "key"}    a delete marker: prints {"version_id"}
  state     {"bucket"}   {"exists", "versioning", "lock"}: the bucket's versioning status and
            whether Object Lock is enabled
  get       {"bucket", "key", "sse_c_key"}           the current object's {"size", "sha256"}
            read with that SSE-C key (32 characters), or {"error": CODE}
"""
import datetime
import hashlib
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(url):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKTEST",
        aws_secret_access_key="SKTEST/secret",
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 5}, max_pool_connections=32
        ),
    )


def until(days):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)
    return t.replace(microsecond=0)


def bucket(s3, a):
    kw = {"ObjectLockEnabledForBucket": True} if a.get("lock") else {}
    s3.create_bucket(Bucket=a["bucket"], **kw)
    s3.put_bucket_versioning(Bucket=a["bucket"], VersioningConfiguration={"Status": "Enabled"})
    return {}


def put(s3, a):
    opts = dict(a.get("opts", {}))
    if "RetainDays" in opts:
        opts["ObjectLockRetainUntilDate"] = until(opts.pop("RetainDays"))
    body = bytes((i * 7 + 3) % 251 for i in range(a["size"]))
    r = s3.put_object(Bucket=a["bucket"], Key=a["key"], Body=body, **opts)
    return {"version_id": r.get("VersionId")}


def tags(s3, a):
    where = {"Bucket": a["bucket"], "Key": a["key"], "VersionId": a["version_id"]}
    if a["tags"]:
        tagset = [{"Key": k, "Value": v} for k, v in a["tags"]]
        s3.put_object_tagging(Tagging={"TagSet": tagset}, **where)
    else:
        s3.delete_object_tagging(**where)
    return {}


def acl(s3, a):
    s3.put_object_acl(Bucket=a["bucket"], Key=a["key"], VersionId=a["version_id"], ACL=a["acl"])
    return {}


def retention(s3, a):
    s3.put_object_retention(
        Bucket=a["bucket"], Key=a["key"], VersionId=a["version_id"],
        Retention={"Mode": a["mode"], "RetainUntilDate": until(a["days"])},
        BypassGovernanceRetention=True,
    )
    return {}


def legalhold(s3, a):
    s3.put_object_legal_hold(
        Bucket=a["bucket"], Key=a["key"], VersionId=a["version_id"],
        LegalHold={"Status": "ON" if a["on"] else "OFF"},
    )
    return {}


def describe(s3, a):
    """Every version of the bucket (or of the keys under `prefix`). With `vanishing`, a
    version deleted between the listing and its HEAD (a deleter at work) is left out."""
    out = {}
    where = {"Bucket": a["bucket"]}
    if "prefix" in a:
        where["Prefix"] = a["prefix"]
    for page in s3.get_paginator("list_object_versions").paginate(**where):
        for v in page.get("Versions", []):
            try:
                out.setdefault(v["Key"], []).append(version(s3, a["bucket"], v))
            except ClientError as e:
                status = e.response["ResponseMetadata"]["HTTPStatusCode"]
                if not (a.get("vanishing") and status == 404):
                    raise
    return out


def version(s3, b, v):
    where = {"Bucket": b, "Key": v["Key"], "VersionId": v["VersionId"]}
    h = s3.head_object(**where)
    tagset = s3.get_object_tagging(**where)["TagSet"]
    grants = s3.get_object_acl(**where)["Grants"]
    lock_until = h.get("ObjectLockRetainUntilDate")
    return {
        "version_id": v["VersionId"],
        "source_version": h.get("Metadata", {}).get("backbeat-source-version-id"),
        "size": h["ContentLength"],
        "storage_class": h.get("StorageClass", "STANDARD"),
        "sse": h.get("ServerSideEncryption"),
        "kms_key_id": h.get("SSEKMSKeyId"),
        "lock_mode": h.get("ObjectLockMode"),
        "retain_until": lock_until.isoformat() if lock_until else None,
        "legal_hold": h.get("ObjectLockLegalHoldStatus"),
        "tags": sorted([t["Key"], t["Value"]] for t in tagset),
        "grants": sorted(
            [g["Permission"], g["Grantee"].get("URI") or g["Grantee"].get("ID") or ""]
            for g in grants
        ),
    }


def delete(s3, a):
    try:
        s3.delete_object(Bucket=a["bucket"], Key=a["key"], VersionId=a["version_id"])
        return {"error": None}
    except ClientError as e:
        return {"error": e.response["Error"]["Code"]}


def get(s3, a):
    kw = {}
    if a.get("sse_c_key"):
        kw = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": a["sse_c_key"]}
    try:
        body = s3.get_object(Bucket=a["bucket"], Key=a["key"], **kw)["Body"].read()
    except ClientError as e:
        return {"error": e.response["Error"]["Code"]}
    return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def state(s3, a):
    try:
        v = s3.get_bucket_versioning(Bucket=a["bucket"]).get("Status")
    except ClientError as e:
        if e.response["Error"]["Code"] == "NoSuchBucket":
            return {"exists": False, "versioning": None, "lock": False}
        raise
    try:
        c = s3.get_object_lock_configuration(Bucket=a["bucket"])["ObjectLockConfiguration"]
        lock = c.get("ObjectLockEnabled") == "Enabled"
    except ClientError:
        lock = False
    return {"exists": True, "versioning": v, "lock": lock}


def fill(s3, a):
    from concurrent.futures import ThreadPoolExecutor

    body = b"f" * a["size"]

    def one(i):
        s3.put_object(Bucket=a["bucket"], Key="%s%06d" % (a["prefix"], i), Body=body)

    with ThreadPoolExecutor(16) as ex:
        list(ex.map(one, range(a["count"])))
    return {}


def unlink(s3, a):
    r = s3.delete_object(Bucket=a["bucket"], Key=a["key"])
    return {"version_id": r.get("VersionId")}


COMMANDS = {
    f.__name__: f
    for f in (bucket, put, tags, acl, retention, legalhold, describe, delete, get, state, fill, unlink)
}

if __name__ == "__main__":
    url, command, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    json.dump(COMMANDS[command](client(url), args), sys.stdout, sort_keys=True)
