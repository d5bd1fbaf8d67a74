# Shared settings for the scripts (sourced, not run).
# Build output lives outside the clone so that later runs on the same machine build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CIVIS_CACHE:-$HOME/.cache/civis}/target}"
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
