# Shared settings for the scripts (sourced, not run).
# Build output lives outside the clone so that later runs on the same machine build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CIVIS_CACHE:-$HOME/.cache/civis}/target}"
# Incremental artifacts of the workspace crates grew to tens of GB here; a full build from
# cached dependencies is fast enough without them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# The public conformance vectors sit beside the clone.
export CIVIS_SHARED_VECTORS="${CIVIS_SHARED_VECTORS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/vectors}"

need_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install the Rust toolchain (rustup) first" >&2
    exit 1
  fi
}

# Install Debian packages the build needs, only when missing (root or sudo; apt-get update first).
need_packages() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Start PostgreSQL (Debian's cluster tools) and export CIVIS_TEST_POSTGRES_URL for the storage
# tests: role `civis` (may create databases), database `civis`, on 127.0.0.1.
start_postgres() {
  need_packages postgresql
  local ver
  ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  pg_lsclusters -h 2>/dev/null | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main status >/dev/null 2>&1 || pg_ctlcluster "$ver" main start
  local port
  port=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "main" { print $3 }')
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 1; done
  local psql=(su postgres -c)
  "${psql[@]}" "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='civis'\"" | grep -q 1 \
    || "${psql[@]}" "psql -p $port -qc \"CREATE ROLE civis LOGIN CREATEDB PASSWORD 'civis'\""
  "${psql[@]}" "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname='civis'\"" | grep -q 1 \
    || "${psql[@]}" "createdb -p $port -O civis civis"
  export CIVIS_TEST_POSTGRES_URL="postgres://civis:civis@127.0.0.1:$port/civis"
}

# Start pcscd with vsmartcard's vpcd virtual reader for the card tests (`civis card serve`
# plugs into it). pcscd is started by hand: service managers do not run here. A pcscd that is
# already running keeps its readers only if it already has vpcd's.
start_pcscd() {
  need_packages pcscd vsmartcard-vpcd
  if pgrep -x pcscd >/dev/null; then
    return 0
  fi
  mkdir -p /run/pcscd "${CARGO_TARGET_DIR}"
  pcscd --foreground >"${CARGO_TARGET_DIR}/pcscd.log" 2>&1 &
  for _ in $(seq 1 50); do [ -S /run/pcscd/pcscd.comm ] && return 0; sleep 0.1; done
  echo "pcscd did not start; see ${CARGO_TARGET_DIR}/pcscd.log" >&2
  exit 1
}

# A private SoftHSM2 token for the PKCS#11 tests and benchmarks: its own config and token
# folder under the build cache, a token labelled civis-test (user PIN 1234). Exports
# SOFTHSM2_CONF and CIVIS_TEST_PKCS11_MODULE.
start_softhsm() {
  need_packages softhsm2
  local dir="${CARGO_TARGET_DIR}/softhsm"
  mkdir -p "$dir/tokens"
  printf 'directories.tokendir = %s/tokens/\nobjectstore.backend = file\nlog.level = ERROR\n' "$dir" >"$dir/softhsm2.conf"
  export SOFTHSM2_CONF="$dir/softhsm2.conf"
  if ! softhsm2-util --show-slots 2>/dev/null | grep -q "Label:.*civis-test"; then
    softhsm2-util --init-token --free --label civis-test --so-pin 12345678 --pin 1234 </dev/null >/dev/null
  fi
  export CIVIS_TEST_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
  export CIVIS_TEST_PKCS11_TOKEN=civis-test
  export CIVIS_TEST_PKCS11_PIN=1234
}
