#!/usr/bin/env bash
# Runs the test suite against real S3 servers: installs moto if missing, starts two servers
# (source and destination sites) on free ports of 127.0.0.1, runs `cargo test`, stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/services.sh
trap services_stop EXIT
services_start_moto
services_start_s3fs
export BACKBEAT_TEST_S3_SOURCE="$MOTO_SOURCE_URL" BACKBEAT_TEST_S3_DEST="$MOTO_DEST_URL"
export BACKBEAT_TEST_S3FS="$S3FS_URL" BACKBEAT_TEST_S3FS_ACCESS_KEY="$S3FS_ACCESS_KEY" BACKBEAT_TEST_S3FS_SECRET_KEY="$S3FS_SECRET_KEY"
cargo test --all-targets "$@"
