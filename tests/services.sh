# Helpers to install and run the real services tests and demos use. Source it, then call
# services_start_moto; services_stop stops whatever was started (by PID).
SERVICES_DIR="${SERVICES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/backbeat-services}"
SERVICES_PIDS=()

# Waits until 127.0.0.1:PORT accepts connections (10 s at most).
services_wait_port() {
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

services_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Installs moto[server] into a virtualenv once; sets MOTO_BIN and MOTO_PY.
services_install_moto() {
  local venv="$SERVICES_DIR/moto-venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "installing moto[server] into $venv ..." >&2
    mkdir -p "$SERVICES_DIR"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' >&2
  fi
  MOTO_BIN="$venv/bin/moto_server"
  MOTO_PY="$venv/bin/python"
}

# Starts one moto server; prints its URL.
services_moto_one() {
  local port log
  port=$(services_free_port)
  log="$SERVICES_DIR/moto-$port.log"
  "$MOTO_BIN" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  SERVICES_PIDS+=($!)
  if services_wait_port "$port"; then
    echo "http://127.0.0.1:$port"
    return 0
  fi
  echo "moto did not start on port $port; see $log" >&2
  return 1
}

# Two moto servers: MOTO_SOURCE_URL and MOTO_DEST_URL.
services_start_moto() {
  services_install_moto
  mkdir -p "$SERVICES_DIR"
  local a b
  a=$(services_moto_one); SERVICES_PIDS+=($(pgrep -n -f "moto_server -H 127.0.0.1 -p ${a##*:}"))
  b=$(services_moto_one); SERVICES_PIDS+=($(pgrep -n -f "moto_server -H 127.0.0.1 -p ${b##*:}"))
  MOTO_SOURCE_URL="$a"
  MOTO_DEST_URL="$b"
  echo "moto: source $MOTO_SOURCE_URL, destination $MOTO_DEST_URL" >&2
}

services_stop() {
  for pid in "${SERVICES_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  SERVICES_PIDS=()
}

# s3s-fs (Rust, unversioned, checks signatures): installed with cargo once. Sets S3FS_URL,
# S3FS_ACCESS_KEY, S3FS_SECRET_KEY.
services_start_s3fs() {
  if ! command -v s3s-fs >/dev/null 2>&1; then
    echo "installing s3s-fs 0.14.1 with cargo (a few minutes, once) ..." >&2
    cargo install s3s-fs --version 0.14.1 --features binary --locked >&2
  fi
  local port dir
  port=$(services_free_port)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/backbeat-s3fs.XXXXXX")
  S3FS_ACCESS_KEY=AKS3FS
  S3FS_SECRET_KEY=SKS3FS/secret
  s3s-fs --host 127.0.0.1 --port "$port" --access-key "$S3FS_ACCESS_KEY" --secret-key "$S3FS_SECRET_KEY" "$dir" >"$SERVICES_DIR/s3fs-$port.log" 2>&1 &
  SERVICES_PIDS+=($!)
  if services_wait_port "$port"; then
    S3FS_URL="http://127.0.0.1:$port"
    echo "s3s-fs: $S3FS_URL (data in $dir)" >&2
    return 0
  fi
  echo "s3s-fs did not start; see $SERVICES_DIR/s3fs-$port.log" >&2
  return 1
}

# nisshi, a Kafka-compatible broker (memory storage for the shared broker; slatedb storage,
# which keeps SCRAM users, for the SASL test): installed with cargo once, with both storage
# engines, under ~/.local/nisshi-slatedb (about 18 minutes cold on 2 cores). Sets
# KAFKA_BROKERS and NISSHI_BIN.
services_nisshi_bin() {
  local root="$HOME/.local/nisshi-slatedb"
  # Only this function installs there, always with both engines.
  if ! [ -x "$root/bin/nisshi" ]; then
    echo "installing nisshi 0.6.0 (dynostore and slatedb storage) with cargo (about 18 minutes, once) ..." >&2
    cargo install nisshi@0.6.0 --locked --features dynostore,slatedb --root "$root" >&2 || return 1
  fi
  NISSHI_BIN="$root/bin/nisshi"
}

services_start_nisshi() {
  services_nisshi_bin || return 1
  local port
  port=$(services_free_port)
  "$NISSHI_BIN" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" >"$SERVICES_DIR/nisshi-$port.log" 2>&1 &
  SERVICES_PIDS+=($!)
  if services_wait_port "$port"; then
    KAFKA_BROKERS="127.0.0.1:$port"
    echo "nisshi: $KAFKA_BROKERS" >&2
    return 0
  fi
  echo "nisshi did not start; see $SERVICES_DIR/nisshi-$port.log" >&2
  return 1
}

# System packages the build and the services need (Debian): installed when missing.
services_system_deps() {
  local missing=()
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  command -v cc >/dev/null 2>&1 || missing+=(build-essential)
  # rdkafka builds librdkafka from source (its cmake-build feature)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || missing+=(libcurl4-openssl-dev)
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
  fi
}
