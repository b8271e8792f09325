#!/usr/bin/env bash
# Writes the `tpm_structures` seed corpus from a real (software) TPM: a private swtpm
# manufactured with swtpm's local CA, driven with tpm2-tools. Run from anywhere; it writes
# fuzz/corpus/tpm_structures/. The output differs per run (fresh keys, random nonces): rerun it
# only to refresh the committed seeds.
#
# Seeds: TPMT_PUBLIC and TPM2B_PUBLIC of the RSA-2048 and ECC P-384 EKs, an ECDSA and an RSASSA
# AK and an ECC signing key; TPMS_ATTEST and TPMT_SIGNATURE of a quote and a certify; the EK
# certificates (DER); the local CA (PEM); and "bundles" TPM2B(AK public) ‖ TPM2B(attest) ‖
# signature, which the target verifies.
set -euo pipefail

out="$(cd "$(dirname "$0")/.." && pwd)/corpus/tpm_structures"
work="$(mktemp -d)"
swtpm_pid=""
cleanup() {
    if [ -n "$swtpm_pid" ]; then kill "$swtpm_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/ca" "$work/state" "$work/certs" "$out"
cat > "$work/localca.conf" <<EOF
statedir = $work/ca
signingkey = $work/ca/signkey.pem
issuercert = $work/ca/issuercert.pem
certserial = $work/ca/certserial
EOF
printf -- '--platform-manufacturer hwsign-fuzz\n--platform-version 2.1\n--platform-model swtpm\n' \
    > "$work/localca.options"
cat > "$work/setup.conf" <<EOF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $work/localca.conf
create_certs_tool_options = $work/localca.options
active_pcr_banks = sha256
EOF
TMPDIR="$work" swtpm_setup --tpm2 --tpmstate "$work/state" --config "$work/setup.conf" \
    --create-ek-cert --create-platform-cert --pcr-banks sha256 \
    --write-ek-cert-files "$work/certs" > "$work/setup.log" 2>&1

swtpm socket --tpm2 --tpmstate "dir=$work/state" \
    --server "type=unixio,path=$work/tpm.sock" --ctrl "type=unixio,path=$work/tpm.sock.ctrl" \
    --flags not-need-init,startup-clear &
swtpm_pid=$!
for _ in $(seq 1 100); do
    [ -S "$work/tpm.sock" ] && break
    sleep 0.05
done
export TPM2TOOLS_TCTI="swtpm:path=$work/tpm.sock" TSS2_LOG=all+none
cd "$work"

# No resource manager: flush transient objects after every tool (swtpm has three slots).
tool() {
    "$@" > /dev/null
    tpm2_flushcontext -t
}

# TPM2B_PUBLIC as tpm2-tools writes it, and the TPMT_PUBLIC inside it.
public() {
    local handle="$1" name="$2"
    tool tpm2_readpublic -c "$handle" -f tss -o "$name.tpm2b"
    cp "$name.tpm2b" "$out/$name.tpm2b-public"
    tail -c +3 "$name.tpm2b" > "$name.public"
    cp "$name.public" "$out/$name.tpmt-public"
}

# u16 big-endian size then the file's bytes.
tpm2b() {
    local size
    size=$(stat -c %s "$1")
    printf "\\x$(printf %02x $((size >> 8)))\\x$(printf %02x $((size & 255)))"
    cat "$1"
}

tool tpm2_createak -C 0x81010001 -c ak-ecc.ctx -G ecc -g sha256 -s ecdsa -u ak-ecc.pub -n ak-ecc.name
tool tpm2_evictcontrol -C o -c ak-ecc.ctx 0x81000010
tool tpm2_createak -C 0x81010001 -c ak-rsa.ctx -G rsa -g sha256 -s rsassa -u ak-rsa.pub -n ak-rsa.name
tool tpm2_evictcontrol -C o -c ak-rsa.ctx 0x81000012
tool tpm2_createprimary -C o -g sha256 -G ecc -c primary.ctx
tool tpm2_evictcontrol -C o -c primary.ctx 0x81000001
tool tpm2_create -C 0x81000001 -G ecc256:ecdsa-sha256 \
    -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign' -u key.pub -r key.priv
tool tpm2_load -C 0x81000001 -u key.pub -r key.priv -c key.ctx
tool tpm2_evictcontrol -C o -c key.ctx 0x81000011

public 0x81010001 ek-rsa2048
public 0x81010016 ek-p384
public 0x81000010 ak-ecdsa
public 0x81000012 ak-rsassa
public 0x81000011 signing-key

for ak in ecdsa rsassa; do
    handle=0x81000010
    [ "$ak" = rsassa ] && handle=0x81000012
    tool tpm2_quote -c "$handle" -l sha256:0,1,2,3,4,5,6,7 -q "$(head -c 32 /dev/urandom | xxd -p -c 64)" \
        -g sha256 -m "quote-$ak.attest" -s "quote-$ak.sig"
    tool tpm2_certify -c 0x81000011 -C "$handle" -g sha256 -o "certify-$ak.attest" -s "certify-$ak.sig"
    for kind in quote certify; do
        cp "$kind-$ak.attest" "$out/$kind-$ak.tpms-attest"
        cp "$kind-$ak.sig" "$out/$kind-$ak.tpmt-signature"
        { tpm2b "ak-$ak.public"; tpm2b "$kind-$ak.attest"; cat "$kind-$ak.sig"; } \
            > "$out/bundle-$kind-$ak"
    done
done

cp "$work/certs/ek-rsa2048.crt" "$out/ek-rsa2048.der"
cp "$work/certs/ek-secp384r1.crt" "$out/ek-p384.der"
cp "$work/ca/issuercert.pem" "$out/local-ca-intermediate.pem"
# An EK certificate bundled with the EK public area it certifies: check_certifies runs on it.
{ tpm2b ek-rsa2048.public; tpm2b "$work/certs/ek-rsa2048.crt"; cat quote-rsassa.sig; } \
    > "$out/bundle-ek-rsa2048"
ls -l "$out"
