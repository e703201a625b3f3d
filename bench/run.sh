#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark harness from the repository root:
#   bash bench/run.sh                      # every scenario: JSON in bench/results/latest.json,
#                                          # charts in docs/img/, a table on stdout
#   bash bench/run.sh --scenario sweep --scale 0.2
# Needs rclone (apt-get install rclone); the e2e scenario needs nisshi (tests/services.sh
# installs it) or --kafka BROKERS.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rclone >/dev/null || { echo "rclone not found: apt-get install rclone (or pass --skip-rclone)" >&2; }
cargo build --release --bins --features bench
exec target/release/backbeat-bench "$@"
