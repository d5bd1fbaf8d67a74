#!/usr/bin/env bash
# The whole test suite: format and lint gates, then every test of the workspace (unit,
# conformance vectors, golden vectors, adversarial inputs, the CLI through its binary).
# Installs what it needs; `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
need_rust
# The card tests build libnfc (nfc1, feature nfc: cmake, bindgen → libclang) with its PC/SC driver;
# the fuzz targets' check builds libFuzzer (C++).
need_packages gcc g++ pkg-config cmake libclang-dev libpcsclite-dev
# The kiosk screen's browser tests: headless Chromium driven by chromedriver; Noto CJK for the
# Korean screen.
need_packages chromium chromium-driver fonts-noto-cjk

if [ ! -d "$CIVIS_SHARED_VECTORS" ]; then
  echo "missing public vectors at $CIVIS_SHARED_VECTORS (../shared beside the clone)" >&2
  exit 1
fi

echo "== PostgreSQL"
start_postgres
echo "   $CIVIS_TEST_POSTGRES_URL"
echo "== SoftHSM2 token"
start_softhsm
echo "   $SOFTHSM2_CONF"
echo "== pcscd + vpcd"
mkdir -p "$CARGO_TARGET_DIR"
start_pcscd

# Test binaries of earlier builds pile up in the shared target folder (hundreds of MB each);
# drop those untouched for three days (cargo relinks any it still needs).
find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -type f -executable -mtime +3 -delete 2>/dev/null || true

start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --features civis/nfc,civis/ssi --locked -- -D warnings
echo "== the kiosk's own build links the reader side only (no card applet, no vpcd host)"
if cargo tree -p civis-verifier --features cli,nfc -e normal --prefix none --locked | grep -Eq '^civis-wallet-core '; then
  echo "civis-verifier with cli,nfc depends on civis-wallet-core (the card applet)" >&2
  exit 1
fi
echo "== cargo check of the fuzz targets (outside the workspace; they must not rot)"
cargo check --manifest-path fuzz/Cargo.toml --bins --locked
echo "== cargo test (workspace, with the nfc reader stack)"
cargo test --workspace --features civis/nfc,civis/ssi --locked 2>&1 | tee "${CARGO_TARGET_DIR}/test-output.txt"
# A single closing line for CI: totals over every test binary.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "civis: %d passed, %d failed, %d skipped\n", p, f, s }' \
  "${CARGO_TARGET_DIR}/test-output.txt" | sed 's/civis: //' | sed 's/^/tests: /'
echo "test suite finished in $(( $(date +%s) - start )) s"
