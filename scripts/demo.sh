#!/usr/bin/env bash
# The main job: build the `civis` binary and run the demo on the embedded defaults; then, when
# the public vectors are beside the clone, verify the ISO 18013-5 Annex D example with the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
need_rust
need_packages gcc pkg-config
features=()
for arg in "$@"; do
  if [ "$arg" = "--keep-running" ]; then
    # A card to tap: the kiosk reads it through pcscd's vpcd reader, which needs the `nfc`
    # build (libnfc: cmake, libclang, libpcsclite).
    need_packages g++ cmake libclang-dev libpcsclite-dev
    start_pcscd
    features=(--features nfc)
  fi
done
cargo build --bin civis "${features[@]}"
civis="$CARGO_TARGET_DIR/debug/civis"
"$civis" demo "$@"

v="$CIVIS_SHARED_VECTORS/iso18013-5"
if [ -d "$v" ]; then
  echo
  echo "[annex D] civis mdoc verify on the ISO/IEC 18013-5 Annex D DeviceResponse (deviceMac, IACA chain):"
  rk=$(sed -n 's/^ephemeral_reader_key.d = //p' "$v/keys.txt")
  "$civis" mdoc verify --response "$v/D.4.1.2_device_response.hex" \
    --session-transcript "$v/D.5.1_session_transcript_bytes.hex" \
    --trust "$v/iaca_certificate.der.hex" --at 2021-01-01T00:00:00Z \
    --reader-key "$rk" --request "$v/D.4.1.1_device_request.hex" > "$CARGO_TARGET_DIR/annex-d.json" \
    && code=0 || code=$?
  cut -c1-240 "$CARGO_TARGET_DIR/annex-d.json"
  echo "    (exit $code: 0 accept, 1 reject, 2 undetermined)"
fi
