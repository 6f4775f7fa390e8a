#!/bin/bash
# batchd vs its peers, one command:  tests/bench/run.sh
#
# Builds batchd (Release) into build-bench/, installs the Debian packages the peers need (only
# the missing ones), then runs every workload on batchd (1 and 2 workers) and on the peers, on
# the same inputs, a warm-up then REPS repetitions, and writes the medians and ratios to
# tests/bench/results/YYYY-MM-DD-HHMM.md (also printed). See tests/bench/README.md.
#
# Environment: REPS (default 3), WRK_SECS (default 8, at most 20), ONLY (comma list of
# photos,thumbs,sqrt,cpu,http,memory; default all; or stored alone: stored_bench.py, with
# BASE_BIN naming an older binary for the plain path beside; or img alone: img_table.py,
# BATCHD_BIN_BEFORE then names an older binary to measure beside; or cluster alone:
# cluster_bench.py, Redis's cost per job and scaling over replicas, with a redis-server it
# starts), PHOTOS (default ../shared/data/photos), SKIP_BUILD=1 (reuse build-bench/),
# BATCHD_BIN (bench another binary; implies SKIP_BUILD).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

# ---------------------------------------------------------------- packages
need=()
pkgs=(python3-pil python3-joblib libvips-tools wrk bc hyperfine curl)
[ "${ONLY:-}" = cluster ] && pkgs+=(redis-server)
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    need+=("$p")
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# ---------------------------------------------------------------- build
if [ -z "${BATCHD_BIN:-}" ]; then
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    gen=()
    command -v ninja >/dev/null && gen=(-G Ninja)
    cmake -S "$repo" -B "$repo/build-bench" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$repo/build-bench" --target batchd >/dev/null
  fi
  export BATCHD_BIN="$repo/build-bench/batchd"
fi

# The plain C loop that cpu_loop is measured against (same loop shape as workers/ops/num_cpu.c).
mkdir -p "$repo/build-bench"
cc -O2 -std=c11 -o "$repo/build-bench/cloop" "$here/cloop.c"

mkdir -p "$here/results"
# ONLY=stored: the stored-batches benchmark alone (stored_bench.py); BASE_BIN=other/batchd adds
# the plain path of this binary against that one.
if [ "${ONLY:-}" = stored ]; then
  exec /usr/bin/python3 "$here/stored_bench.py" --bin "$BATCHD_BIN" ${BASE_BIN:+--base-bin "$BASE_BIN"} \
    --reps "${REPS:-3}" --out "$here/results/$(date -u +%Y-%m-%d-%H%M)-stored.md" \
    --command "ONLY=stored${BASE_BIN:+ BASE_BIN=$BASE_BIN}${REPS:+ REPS=$REPS} tests/bench/run.sh"
fi
if [ "${ONLY:-}" = img ]; then
  # Issue 14's image table (img_table.py): per photo, the batch, formats and profiles.
  exec /usr/bin/python3 "$here/img_table.py" --bin "$BATCHD_BIN" --reps "${REPS:-3}" \
    --results "$here/results" ${BATCHD_BIN_BEFORE:+--bin-before "$BATCHD_BIN_BEFORE"} \
    --command "ONLY=img tests/bench/run.sh${REPS:+ (REPS=$REPS)}"
fi
if [ "${ONLY:-}" = cluster ]; then
  # Issue 11: Redis overhead per job (1M sqrt async, SQLite vs Redis vs plain) and scaling of
  # I/O- and CPU-bound batches over 1-3 replicas sharing one redis-server it starts itself.
  exec /usr/bin/python3 "$here/cluster_bench.py" --bin "$BATCHD_BIN" --reps "${REPS:-3}" \
    --out "$here/results/$(date -u +%Y-%m-%d)-cluster.md" \
    --command "ONLY=cluster${REPS:+ REPS=$REPS} tests/bench/run.sh"
fi
exec /usr/bin/python3 "$here/bench.py" --bin "$BATCHD_BIN" --cloop "$repo/build-bench/cloop" \
  --reps "${REPS:-3}" --results "$here/results" --command "tests/bench/run.sh${REPS:+ (REPS=$REPS)}"
