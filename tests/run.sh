#!/usr/bin/env bash
# Runs the test suite against real services: installs what is missing (moto, s3s-fs, the
# nisshi Kafka-compatible broker), starts them on free ports of 127.0.0.1 (two moto servers
# as source and destination sites), runs `cargo test`, and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/services.sh
services_system_deps
trap services_stop EXIT
services_start_moto
services_start_s3fs
services_start_nisshi
export BACKBEAT_TEST_S3_SOURCE="$MOTO_SOURCE_URL" BACKBEAT_TEST_S3_DEST="$MOTO_DEST_URL"
export BACKBEAT_TEST_KAFKA="$KAFKA_BROKERS"
# Tests that need a broker of their own (behind a TLS front, with authentication) start it.
export BACKBEAT_TEST_NISSHI="$NISSHI_BIN"
# boto3 (installed with moto) checks replicas independently of backbeat's own client.
export BACKBEAT_TEST_PYTHON="$MOTO_PY"
export BACKBEAT_TEST_S3FS="$S3FS_URL" BACKBEAT_TEST_S3FS_ACCESS_KEY="$S3FS_ACCESS_KEY" BACKBEAT_TEST_S3FS_SECRET_KEY="$S3FS_SECRET_KEY"
cargo test --all-targets "$@"
