#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time on a COPY of its checked-in corpus (the tree
# stays clean; what it learns stays in WORK_DIR/corpus). Exit 0 when nothing was found; else
# non-zero, with the crash file's path and the command that replays it.
#
#   tests/fuzz/run.sh FUZZ_BINARY CORPUS_DIR WORK_DIR [DICT [SEED_DIR...]]
#
# SEED_DIRs (e.g. ../shared/data/pngsuite) add their small files (<= FUZZ_SEED_MAX bytes,
# default 65536) to the working corpus: real files as seeds without copying them into the tree.
#   FUZZ_SECONDS=600  how long to fuzz (default 30)
#   FUZZ_TIMEOUT=60   one input taking longer is a failure (a hang)
#   FUZZ_ARGS="..."   more libFuzzer flags, e.g. "-max_len=65536 -jobs=2"
set -uo pipefail

bin=$1 corpus=$2 work=$3 dict=${4:-}
shift 3
[ $# -gt 0 ] && shift
secs=${FUZZ_SECONDS:-30}
name=$(basename "$bin")

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
if [ -d "$corpus" ]; then
  cp -r "$corpus"/. "$work/corpus/"
  # Reproducers kept in the corpus (crash-*) run too: a fixed bug stays fixed.
fi
for seeds in "$@"; do
  [ -d "$seeds" ] || continue
  # Flattened, with the path in the name: two folders may hold the same file name.
  find "$seeds" -type f -size -"$((${FUZZ_SEED_MAX:-65536} + 1))"c -print0 |
    while IFS= read -r -d '' f; do
      cp "$f" "$work/corpus/seed-$(echo "${f#"$seeds"/}" | tr '/' '_')"
    done
done

args=(-max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-60}" -rss_limit_mb=3072
      -artifact_prefix="$work/artifacts/" -print_final_stats=1)
if [ -n "$dict" ] && [ -f "$dict" ]; then
  args+=(-dict="$dict")
fi
# shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags on purpose
args+=(${FUZZ_ARGS:-})

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "$name: fuzzing for ${secs}s on a copy of $corpus and $# seed dirs ($(ls "$work/corpus" | wc -l) inputs)"
timeout -k 10 $((secs + 300)) "$bin" "${args[@]}" "$work/corpus" >"$work/log" 2>&1
rc=$?
grep -E "^(stat::|#[0-9]+ +DONE)" "$work/log" | tail -12
if [ "$rc" -ne 0 ]; then
  echo "---- $name FAILED (exit $rc); the end of its log ($work/log):"
  tail -60 "$work/log"
  found=0
  for f in "$work"/artifacts/*; do
    [ -e "$f" ] || continue
    found=1
    echo "crash file: $f"
    echo "replay it:  $bin $f"
    for r in "$corpus"/crash-*; do
      if [ -e "$r" ] && cmp -s "$f" "$r"; then
        echo "it is the checked-in reproducer $r: the bug it pins is not fixed (or is back)"
      fi
    done
  done
  [ "$found" = 1 ] || echo "no crash file (timeout $((secs + 300))s reached, or the target failed to start)"
  exit 1
fi
echo "$name: $(ls "$work/corpus" | wc -l) inputs in the corpus after the run; nothing found"
