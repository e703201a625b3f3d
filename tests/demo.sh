#!/usr/bin/env bash
# The README's first command: starts two local S3 servers (moto, installed on first use),
# fills a versioned source bucket, and replicates it with `backbeat sync`, twice (the second
# run finds everything in place). Stops the servers at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/services.sh
trap services_stop EXIT
services_start_moto
cargo build --release --quiet
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret AWS_DEFAULT_REGION=us-east-1
echo "filling s3://photos on $MOTO_SOURCE_URL ..." >&2
"$MOTO_PY" - "$MOTO_SOURCE_URL" "$MOTO_DEST_URL" <<'PY'
import sys, os, time, boto3
src = boto3.client("s3", endpoint_url=sys.argv[1])
dst = boto3.client("s3", endpoint_url=sys.argv[2])
for c, b in ((src, "photos"), (dst, "photos-replica")):
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
for i in range(40):
    src.put_object(Bucket="photos", Key=f"2026/11/img-{i:03}.jpg", Body=os.urandom(64 * 1024),
                   ContentType="image/jpeg", Metadata={"camera": "demo"}, Tagging="album=demo")
for v in range(3):
    src.put_object(Bucket="photos", Key="index.json", Body=b'{"version": %d}' % v, ContentType="application/json")
src.put_object(Bucket="photos", Key="video/clip.mp4", Body=os.urandom(24 * 1024 * 1024), ContentType="video/mp4")
src.put_object(Bucket="photos", Key="tmp/draft.txt", Body=b"draft")
time.sleep(1.1)
src.delete_object(Bucket="photos", Key="tmp/draft.txt")
PY
BB=target/release/backbeat
echo; echo "\$ backbeat sync s3://photos s3://photos-replica ..." >&2
"$BB" sync s3://photos s3://photos-replica --source-endpoint "$MOTO_SOURCE_URL" --destination-endpoint "$MOTO_DEST_URL" --multipart-threshold 16MiB --part-size 8MiB
echo; echo "\$ (again: everything is already there)" >&2
"$BB" sync s3://photos s3://photos-replica --source-endpoint "$MOTO_SOURCE_URL" --destination-endpoint "$MOTO_DEST_URL" --multipart-threshold 16MiB --part-size 8MiB
