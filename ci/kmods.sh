#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# The project's real-API kernel modules (fixtures/kmod) on every arch:
# build them with `percpu-bed kbuild` from Debian's linux-source-6.1 (or
# the tree in $KMODS_TREE), then run every built module at 1, 4 and 64
# CPUs (32 where NR_CPUS is 32) and on a sparse possible mask.  Exits 0 only
# when every good module PASSes everywhere, every planted bug is CAUGHT (or
# declared latent by its expectation file's `needs` where the configuration
# cannot show it, and caught in at least one configuration of each arch),
# and an importer without its exporter is refused with "Unknown symbol".
#
#   ci/kmods.sh [OUT]        OUT: where kbuild puts the modules (default target/kmods)
#
# Environment: PERCPU_BED (the binary, default target/release/percpu-bed,
# built if missing), PERCPU_BED_CACHE (kbuild's cache), KMODS_TREE (a kernel
# tree instead of Debian's), KMODS_ARCHES (default "x86_64 arm64 s390x
# sparc32 riscv64 alpha").
set -euo pipefail
cd "$(dirname "$0")/.."
export UNICORN_NO_PKG_CONFIG=1
BIN=${PERCPU_BED:-target/release/percpu-bed}
OUT=${1:-target/kmods}
ARCHES=${KMODS_ARCHES:-x86_64 arm64 s390x sparc32 riscv64 alpha}
if [[ ! -x $BIN ]]; then
    cargo build --release --locked
fi
start=$SECONDS
tree=()
if [[ -n ${KMODS_TREE:-} ]]; then tree=(--tree "$KMODS_TREE"); fi
# All six targets are built (alpha's modules too); $ARCHES are run.
"$BIN" kbuild "${tree[@]}" -o "$OUT"

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
fail=0
for dir in $ARCHES; do
    case $dir in
        riscv64) arch=km ;;
        *) arch=$dir ;;
    esac
    case $dir in
        sparc32 | alpha) big=32 ;; # NR_CPUS
        *) big=64 ;;
    esac
    d=$OUT/$dir
    [[ -d $d ]] || { echo "kmods: $d missing: kbuild built nothing for $dir"; fail=1; continue; }
    # Units: the exporter and its importer run together, the rest alone.
    units=()
    for ko in "$d"/*.ko; do
        case $(basename "$ko") in
            pcpubed_import.ko) ;;
            pcpubed_export.ko) units+=("$ko $d/pcpubed_import.ko") ;;
            *) units+=("$ko") ;;
        esac
    done
    for cfg in "--cpus 1" "--cpus 4" "--cpus $big" "--possible 0-1,4-5,8"; do
        for u in "${units[@]}"; do
            name=$(basename "${u%% *}" .ko)
            f="$results/$dir.$name.$(echo "$cfg" | tr -c 'a-z0-9' _).json"
            # shellcheck disable=SC2086 # $cfg and $u are word lists
            "$BIN" run --arch "$arch" $cfg --format json $u >"$f" 2>"$f.err" || true
            echo "$dir|$cfg|$f" >>"$results/index"
        done
    done
    # Without its exporter the importer must be refused, naming the symbol.
    if "$BIN" run --arch "$arch" "$d/pcpubed_import.ko" >/dev/null 2>"$results/$dir.import-alone"; then
        echo "kmods: $dir: pcpubed_import.ko ran without pcpubed_export.ko"
        fail=1
    elif ! grep -q "pcpubed_import.ko: Unknown symbol pcpubed_export_" "$results/$dir.import-alone"; then
        echo "kmods: $dir: pcpubed_import.ko alone: not the Unknown symbol error:"
        cat "$results/$dir.import-alone"
        fail=1
    fi
done

python3 - "$results/index" <<'EOF' || fail=1
import json, sys, collections
bad = 0
# (arch, planted object) -> [caught somewhere, not caught somewhere else than where latent]
planted_seen = {}
counts = collections.Counter()
for line in open(sys.argv[1]):
    arch, cfg, path = line.rstrip("\n").split("|")
    try:
        report = json.load(open(path))
    except ValueError:
        err = open(path + ".err").read().strip().splitlines()
        print(f"ERROR  {arch:8} {cfg:22} {path}: {err[-1] if err else 'no output'}")
        bad += 1
        continue
    for t in report["tests"]:
        obj, status, planted = t["object"], t["status"], t["expect_caught"]
        if planted:
            seen = planted_seen.setdefault((arch, obj), [False, False])
            seen[0] |= status == "caught"
            seen[1] |= not t.get("latent")
        if planted and status == "caught":
            counts["caught"] += 1
        elif planted and status == "fail" and t.get("latent"):
            counts["latent"] += 1
        elif not planted and status == "pass":
            counts["pass"] += 1
        else:
            d = t.get("diagnostic") or {}
            print(f"FAIL   {arch:8} {cfg:22} {obj}: {status}: {d.get('summary', '')}")
            counts["fail"] += 1
            bad += 1
for (arch, obj), (was_caught, showable) in sorted(planted_seen.items()):
    # Latent in every configuration is allowed only where the arch can never
    # meet its needs (trunc32 where percpu lies below 4 GiB): say so.
    if not was_caught and showable:
        print(f"FAIL   {arch:8} {obj}: planted bug caught in no configuration")
        bad += 1
    elif not was_caught:
        print(f"note   {arch:8} {obj}: latent in every configuration of this arch (see its needs)")
print(f"kmods: {counts['pass']} pass, {counts['caught']} caught, {counts['latent']} latent (declared), "
      f"{counts['fail']} fail")
sys.exit(1 if bad else 0)
EOF
echo "kmods: $((SECONDS - start)) s"
if [[ $fail -ne 0 ]]; then
    echo "kmods: FAILED"
    exit 1
fi
echo "kmods: all as expected"
