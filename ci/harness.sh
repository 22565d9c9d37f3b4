#!/usr/bin/env bash
# The real mm/percpu.c in userspace: build the harness from Debian's
# linux-source-6.1 (downloaded into the cache by percpu-bed on first use,
# as ci/kernel.sh does) and check it against the model.
#
#   ci/harness.sh [--tree DIR]
#
# 1. `harness build`, timed (extract, compile, cache; both harnesses);
# 2. `harness diff` on three chunk sizes and seeds: zero divergences;
# 3. `harness verify`: the model's verify() holds on the real code's state;
# 4. the fix switch: the unpatched tree against the model with the
#    hint-free fix must diverge (exit 1), and a user's tree (a hard-linked
#    copy of the tree with the one-line fix in mm/percpu.c) must match it
#    (exit 0) and diverge from the unfixed model;
# 5. `harness hint-free`: the documented sequence and measurements
#    (docs/hint-free.md) come out as documented;
# 6. `harness alloc`: the whole pcpu_alloc/free_percpu/balance work over
#    mm/percpu-km.c against the model's Percpu (km backend) on three
#    geometries and two of seed 002's workloads, zero divergences; and a
#    copy of the tree with one constant changed (PCPU_EMPTY_POP_PAGES_HIGH
#    4 -> 5) must diverge (exit 1), so the comparison is seen to bite.
#
# About 40 s on two cores once the tree is in the cache (step 6: about
# 10 s).  Nothing from the tree enters the checkout: the patched copies
# live under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

tree_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tree) tree_args=(--tree "$(realpath "$2")"); shift 2 ;;
    *) echo "usage: ci/harness.sh [--tree DIR]" >&2; exit 2 ;;
  esac
done

command -v gcc >/dev/null || { echo "ci/harness.sh: gcc is missing (apt-get install gcc)" >&2; exit 2; }
export UNICORN_NO_PKG_CONFIG=1
cargo build --release --locked -q
bed=target/release/percpu-bed

step() { printf '\n== %s\n' "$*"; }
expect() { # expect STATUS CMD...: run CMD, fail unless it exits STATUS
  local want=$1; shift
  set +e; "$@"; local got=$?; set -e
  if [[ $got -ne $want ]]; then echo "ci/harness.sh: expected exit $want, got $got: $*" >&2; exit 1; fi
}

step "build the harness from the tree"
time "$bed" harness build "${tree_args[@]}"

step "differential: real mm/percpu.c vs the model, zero divergences"
"$bed" harness diff "${tree_args[@]}" --ops 200000 --seed 1 --pages 8
"$bed" harness diff "${tree_args[@]}" --ops 100000 --seed 2 --pages 4
"$bed" harness diff "${tree_args[@]}" --ops 100000 --seed 3 --pages 32

step "the model's verify() on the real code's state"
"$bed" harness verify "${tree_args[@]}" --ops 100000 --seed 4

step "fix switch: the unpatched tree diverges from the model with the fix"
expect 1 "$bed" harness diff "${tree_args[@]}" --ops 20000 --fix

step "a user's tree with the one-line fix matches the model with the fix"
if [[ ${#tree_args[@]} -gt 0 ]]; then
  src=${tree_args[1]}
else
  cache=${PERCPU_BED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/percpu-bed}
  src=$(ls -d "$cache"/sources/debian-linux-source-6.1_*/linux-source-6.1 | sort -V | tail -1)
fi
user=target/harness-tree
rm -rf "$user"
mkdir -p "$(dirname "$user")"
cp -al "$src" "$user"
rm "$user/mm/percpu.c"   # break the hard link before editing
perl -0pe 's/(pcpu_block_update\(&chunk->chunk_md,\s*pcpu_block_off_to_off\(s_index, start\),\s*)end\)/$1pcpu_block_off_to_off(s_index, end))/' \
  "$src/mm/percpu.c" > "$user/mm/percpu.c"
if cmp -s "$src/mm/percpu.c" "$user/mm/percpu.c"; then
  echo "ci/harness.sh: the one-line fix did not apply to $src/mm/percpu.c" >&2; exit 1
fi
"$bed" harness diff --tree "$user" --ops 100000 --fix
expect 1 "$bed" harness diff --tree "$user" --ops 20000
rm -rf "$user"

step "the hint-free finding on the real code, as docs/hint-free.md shows it"
"$bed" harness hint-free "${tree_args[@]}"

step "the whole allocator (pcpu_alloc, free_percpu, balance work, percpu-km) vs the model, zero divergences"
"$bed" harness alloc "${tree_args[@]}" --ops 100000 --seed 1 --cpus 4
"$bed" harness alloc "${tree_args[@]}" --ops 50000 --seed 2 --cpus 1 --reserved 0
"$bed" harness alloc "${tree_args[@]}" --ops 50000 --seed 3 --cpus 6 --static-size 0x2ffd
"$bed" harness alloc "${tree_args[@]}" --workload alternating-256 --objects 8192
"$bed" harness alloc "${tree_args[@]}" --workload second-half-filled-64 --objects 8192

step "a tree with PCPU_EMPTY_POP_PAGES_HIGH 5 diverges from the model"
mutant=target/harness-km-mutant
rm -rf "$mutant"
for f in include/linux/percpu.h mm/percpu-internal.h mm/percpu.c mm/percpu-km.c; do
  mkdir -p "$mutant/$(dirname "$f")"
  cp "$src/$f" "$mutant/$f"
done
perl -pi -e 's/^(#define\s+PCPU_EMPTY_POP_PAGES_HIGH\s+)4\b/${1}5/' "$mutant/mm/percpu.c"
if cmp -s "$src/mm/percpu.c" "$mutant/mm/percpu.c"; then
  echo "ci/harness.sh: the mutation did not apply to $src/mm/percpu.c" >&2; exit 1
fi
expect 1 "$bed" harness alloc --tree "$mutant" --ops 20000
rm -rf "$mutant"
