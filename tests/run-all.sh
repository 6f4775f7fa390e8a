#!/usr/bin/env bash
# The one test command (README, CI): installs what is missing on a Debian 12 machine, builds
# batchd twice (optimised, and with AddressSanitizer + UndefinedBehaviorSanitizer) and runs
# every test with ctest in both builds, then builds the libFuzzer targets with clang (ASan +
# UBSan) and fuzzes each for FUZZ_SECONDS from a copy of its corpus.
#
#   tests/run-all.sh            # everything
#   SKIP_SANITIZERS=1 tests/run-all.sh
#   SKIP_FUZZ=1 tests/run-all.sh
#   FUZZ_SECONDS=600 CHAOS=1 SOAK_SECONDS=600 tests/run-all.sh   # the long runs
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests need (the tests use Pillow as the reference; the
# web console's test drives Debian's Chromium through chromedriver and selenium; the image
# test builds the Dockerfile with buildah on a base made by debootstrap; the cluster tests
# start Debian's redis-server on loopback, SPEC §9).
pkgs=(gcc cmake ninja-build pkg-config libmicrohttpd-dev libjansson-dev libjpeg62-turbo-dev
      libturbojpeg0-dev libpng-dev libdeflate-dev liblua5.4-dev liblcms2-dev libwebp-dev libsqlite3-dev
      libhiredis-dev redis-server
      python3 python3-pil python3-numpy python3-yaml curl nginx-light clang-format-14 git clang
      libclang-rt-14-dev wrk chromium chromium-driver python3-selenium
      buildah debootstrap
      colord-data icc-profiles-free libgs-common)  # the last three: ICC profiles for the tests
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc)
shared=$(cd .. && pwd)/shared

echo "== optimised build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBATCHD_WERROR=ON \
      -DBATCHD_SHARED_DIR="$shared" >/dev/null
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure --timeout 900

if [ "${SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer build"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DASAN=ON -DUBSAN=ON \
        -DBATCHD_WERROR=ON -DBATCHD_SHARED_DIR="$shared" >/dev/null
  cmake --build build-asan -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 900 -LE nosan
fi

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
  echo "== libFuzzer targets (clang, ASan + UBSan), ${FUZZ_SECONDS:-30} s each"
  # Warnings are the gcc builds' business: a clang-only warning must not hide a crash.
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DBATCHD_FUZZ=ON -DASAN=ON -DUBSAN=ON -DBATCHD_WERROR=OFF \
        -DBATCHD_SHARED_DIR="$shared" >/dev/null
  cmake --build build-fuzz -j "$jobs" --target fuzz_all
  ctest --test-dir build-fuzz --output-on-failure -L fuzz -j "$jobs"
fi
