#!/usr/bin/env bash
# Fuzz every target for SECONDS (default 300) each, seeded from the conformance vectors.
# Not part of CI. Uses cargo-fuzz (installed on first use) on the stable toolchain via
# RUSTC_BOOTSTRAP, since libFuzzer's sanitizer flags are nightly-only.
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
secs="${1:-300}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(device_response cose_sign1 status_list apdu registry_tx sync_bundle applet qr ndef_handover device_engagement card_info session_data device_request block gossip_batch card_reader vrf_proof)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR   # cargo-fuzz keeps its own target dir under fuzz/

seed() { # seed TARGET FILE...: hex files are decoded, others copied
  local dir="fuzz/corpus/$1"; shift; mkdir -p "$dir"
  for f in "$@"; do
    [ -f "$f" ] || continue
    if [[ "$f" == *.hex || "$f" == *.md ]]; then
      tr -cd '0-9a-fA-F' < "$f" | xxd -r -p > "$dir/$(basename "$f").bin" 2>/dev/null || true
    else
      cp "$f" "$dir/"
    fi
  done
}
v="$CIVIS_SHARED_VECTORS"
seed device_response "$v"/iso18013-5/D.4.1.2_device_response.hex specs/vectors/citizen/device_response.cbor
seed cose_sign1 "$v"/iso18013-5/D.5.2_issuer_auth.hex "$v"/iso18013-5/D.5.4_reader_auth.hex "$v"/token-status-list/status_list_cwt.md
for f in "$v"/cose/*.json; do
  mkdir -p fuzz/corpus/cose_sign1
  python3 -c 'import json,sys; sys.stdout.buffer.write(bytes.fromhex(json.load(open(sys.argv[1]))["output"]["cbor"]))' "$f" \
    > "fuzz/corpus/cose_sign1/$(basename "$f" .json).bin"
done
for f in "$v"/token-status-list/status_list_encoding*_cbor.md; do
  mkdir -p fuzz/corpus/status_list
  sed -n '/encoded:/,$p' "$f" | tr -cd '0-9a-fA-F' | xxd -r -p > "fuzz/corpus/status_list/$(basename "$f" .md).bin"
  [ -s "fuzz/corpus/status_list/$(basename "$f" .md).bin" ] || tr -cd '0-9a-fA-F' < "$f" | xxd -r -p > "fuzz/corpus/status_list/$(basename "$f" .md).bin"
done
seed status_list specs/vectors/citizen/status_list.cbor
# Civis's own golden vectors (specs/vectors, pinned by core's wire_golden test) seed the targets
# of the formats they pin.
seed registry_tx specs/vectors/chain/tx-*.cbor
seed sync_bundle specs/vectors/chain/bundle-*.cbor
seed block specs/vectors/chain/block.cbor
seed ndef_handover specs/vectors/card/ndef-handover.bin
seed device_request specs/vectors/card/kiosk-accreditation.cbor specs/vectors/citizen/device_request.cbor
seed device_engagement "$v"/iso18013-5/D.3.1_device_engagement.hex
seed qr specs/vectors/qr/engagement.txt specs/vectors/qr/presentation.txt
mkdir -p fuzz/corpus/gossip_batch
for f in specs/vectors/chain/tx-*.cbor; do
  python3 -c 'import sys,struct; d=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(struct.pack(">I",len(d))+d)' "$f" \
    > "fuzz/corpus/gossip_batch/$(basename "$f" .cbor).bin"
done
# Chain seeds also come from the chain tests' wire forms (written by `cargo test -p civis-core --test
# chain_light` when CIVIS_FUZZ_SEEDS names a folder), else the fuzzer starts from scratch.
if [ -n "${CIVIS_FUZZ_SEEDS:-}" ] && [ -d "$CIVIS_FUZZ_SEEDS" ]; then
  for t in registry_tx sync_bundle; do mkdir -p "fuzz/corpus/$t"; cp "$CIVIS_FUZZ_SEEDS/$t".* "fuzz/corpus/$t/" 2>/dev/null || true; done
fi
mkdir -p fuzz/corpus/vrf_proof
python3 -c 'import json,sys; [open(f"fuzz/corpus/vrf_proof/{i}.bin","wb").write(bytes.fromhex(v["pi"])) for i,v in enumerate(json.load(open(sys.argv[1]))["vectors"])]' "$v"/vrf-rfc9381/ecvrf_p256_sha256_tai.json
mkdir -p fuzz/corpus/apdu
printf '\x00\xa4\x04\x00\x07\xd2\x76\x00\x00\x85\x01\x01\x00' > fuzz/corpus/apdu/select_ndef
printf '\x00\xb0\x00\x02\x00\x00\xce' > fuzz/corpus/apdu/read_binary_ext
printf '\x10\xc3\x00\x00\x05\x53\x03\x01\x02\x03' > fuzz/corpus/apdu/envelope_chained

# The applet: APDU sequences split at FF FF (FF FE resets the card): NDEF read, Civis GET DATA.
mkdir -p fuzz/corpus/applet fuzz/corpus/qr
printf '\x00\xa4\x04\x00\x07\xd2\x76\x00\x00\x85\x01\x01\xff\xff\x00\xa4\x00\x0c\x02\xe1\x03\xff\xff\x00\xb0\x00\x00\x0f\xff\xff\x00\xa4\x00\x0c\x02\xe1\x04\xff\xff\x00\xb0\x00\x00\x02' > fuzz/corpus/applet/ndef_read
printf '\x00\xa4\x04\x00\x07\xf0\x43\x49\x56\x49\x53\x01\xff\xff\x80\xca\x00\x00\x00\xff\xfe\x00\xa4\x04\x00\x07\xa0\x00\x00\x02\x48\x04\x00' > fuzz/corpus/applet/civis_info
printf 'CVP1:' > fuzz/corpus/qr/prefix

for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== fuzz $t for ${secs}s"
  (cd fuzz && cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 2>&1 \
    | tee "corpus/$t.log" | grep -E "^#[0-9]+.*(DONE|pulse)|ERROR|panicked|SUMMARY" | tail -5)
done
