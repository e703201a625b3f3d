#!/usr/bin/env bash
# The README's first command: continuous replication on this machine. Starts two local S3
# servers (moto, installed on first use), runs `backbeat run` with an embedded broker, writes
# objects to the source bucket and shows them arriving at the destination. Stops everything
# at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/services.sh
services_system_deps
trap 'kill "${RUN_PID:-}" 2>/dev/null || true; services_stop' EXIT
services_start_moto
cargo build --release --quiet
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret AWS_DEFAULT_REGION=us-east-1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/backbeat-demo.XXXXXX")
"$MOTO_PY" - "$MOTO_SOURCE_URL" "$MOTO_DEST_URL" <<'PY'
import sys, boto3
for url, b in ((sys.argv[1], "photos"), (sys.argv[2], "photos-replica")):
    c = boto3.client("s3", endpoint_url=url)
    c.create_bucket(Bucket=b)
    c.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
PY
cat > "$WORK/replication.xml" <<'XML'
<ReplicationConfiguration>
  <Role>arn:aws:iam::000000000000:role/demo</Role>
  <Rule>
    <ID>everything</ID><Status>Enabled</Status><Priority>1</Priority>
    <Filter><Prefix></Prefix></Filter>
    <DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication>
    <Destination><Bucket>arn:aws:s3:::photos-replica</Bucket><StorageClass>site-b</StorageClass></Destination>
  </Rule>
</ReplicationConfiguration>
XML
cat > "$WORK/backbeat.toml" <<EOF2
# moto publishes no event notifications: the source is rescanned every 2 seconds.
[kafka]
brokers = []
[source]
endpoint = "$MOTO_SOURCE_URL"
buckets = ["photos"]
rules_file = "replication.xml"
scan_interval_seconds = 2
[sites.site-b]
endpoint = "$MOTO_DEST_URL"
buckets = { photos = "photos-replica" }
[replication]
profile = "$PWD/tuning/small-vm.toml"
EOF2
echo "\$ backbeat run --config $WORK/backbeat.toml" >&2
target/release/backbeat run --config "$WORK/backbeat.toml" 2>"$WORK/backbeat.log" &
RUN_PID=$!
"$MOTO_PY" - "$MOTO_SOURCE_URL" "$MOTO_DEST_URL" <<'PY'
import os, sys, time, boto3
src = boto3.client("s3", endpoint_url=sys.argv[1])
dst = boto3.client("s3", endpoint_url=sys.argv[2])
def count(c, b):
    r = c.list_object_versions(Bucket=b)
    return len(r.get("Versions", [])), len(r.get("DeleteMarkers", []))
written = 0
for round in range(5):
    for i in range(8):
        src.put_object(Bucket="photos", Key=f"2026/11/img-{round}-{i}.jpg", Body=os.urandom(64 * 1024),
                       ContentType="image/jpeg", Metadata={"camera": "demo"}, Tagging="album=demo")
        written += 1
    src.put_object(Bucket="photos", Key="index.json", Body=b'{"round": %d}' % round, ContentType="application/json")
    written += 1
    if round == 2:
        src.delete_object(Bucket="photos", Key="2026/11/img-0-0.jpg")
    print(f"source: wrote {written} versions; destination has {count(dst, 'photos-replica')[0]} versions", flush=True)
    time.sleep(2)
deadline = time.time() + 60
while time.time() < deadline:
    v, d = count(dst, "photos-replica")
    print(f"destination: {v} of {written} versions, {d} delete marker(s)", flush=True)
    if v >= written and d >= 1:
        break
    time.sleep(2)
idx = dst.get_object(Bucket="photos-replica", Key="index.json")
print("destination index.json:", idx["Body"].read().decode(), "metadata:", idx["Metadata"])
PY
kill -TERM "$RUN_PID"; wait "$RUN_PID" || true
grep -v " INFO " "$WORK/backbeat.log" | tail -3 >&2 || true
