#!/usr/bin/env bash
# The one build script for batchd releases: the Dockerfile's build stage runs it, and so do
# CI and tests/deploy/test_build_script.py on a plain Debian 12 host, so what ships is what
# was tested. It installs the Debian build dependencies that are missing, configures a
# Release build with warnings as errors, builds the batchd binary and installs it, with the
# docs, into a staging directory (DESTDIR-style: files land under DESTDIR/usr/local/...).
#
#   docker/build.sh DESTDIR       build and stage into DESTDIR
#   docker/build.sh --deps-only   only install the build dependencies (a cacheable layer)
#
# Environment: BATCHD_BUILD_DIR (default: <repo>/build-release), BATCHD_PREFIX (default
# /usr/local), BATCHD_JOBS (default: the CPUs this process may use).
# Idempotent: a second run reuses the build directory and installs nothing new.
set -euo pipefail

usage() {
    echo "usage: $0 DESTDIR | --deps-only" >&2
    exit 2
}

[ $# -eq 1 ] || usage
case "$1" in
    -h | --help) usage ;;
esac

# Work from any cwd: everything is relative to the repository this script lives in.
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src_dir=$(cd "$script_dir/.." && pwd)

# Debian 12 package names. Runtime counterparts (the Dockerfile's runtime stage installs
# exactly these): libmicrohttpd12 libjansson4 libjpeg62-turbo libturbojpeg0 libpng16-16
# libdeflate0 libsqlite3-0 liblua5.4-0 liblcms2-2 libwebp7 libwebpmux3 libwebpdemux2
# libhiredis0.14 (cluster mode's Redis client, SPEC §9; the Redis server is not in the image).
build_deps=(gcc libc6-dev binutils cmake ninja-build pkg-config
    libmicrohttpd-dev libjansson-dev libjpeg62-turbo-dev libturbojpeg0-dev libpng-dev
    libdeflate-dev libsqlite3-dev liblua5.4-dev liblcms2-dev libwebp-dev libhiredis-dev)

missing_deps() {
    local p status
    for p in "${build_deps[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        if [ "$status" != "installed" ]; then
            printf '%s\n' "$p"
        fi
    done
}

install_deps() {
    local missing
    mapfile -t missing < <(missing_deps)
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "build.sh: installing ${missing[*]}" >&2
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "build.sh: missing packages and not root: ${missing[*]}" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_deps
if [ "$1" = "--deps-only" ]; then
    exit 0
fi

# Resolve DESTDIR to an absolute path before we change directory anywhere.
mkdir -p "$1"
destdir=$(cd "$1" && pwd)
build_dir=${BATCHD_BUILD_DIR:-$src_dir/build-release}
prefix=${BATCHD_PREFIX:-/usr/local}
jobs=${BATCHD_JOBS:-$(nproc)}

cmake -S "$src_dir" -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DBATCHD_WERROR=ON
# Only the shipped binary: unit tests are built by tests/run-all.sh, not by a release.
cmake --build "$build_dir" --target batchd --parallel "$jobs"
DESTDIR="$destdir" cmake --install "$build_dir" --strip

# The docs ship beside the binary (the runtime image has no other copy of the contract).
doc_dir="$destdir$prefix/share/doc/batchd"
mkdir -p "$doc_dir"
for f in README.md api/openapi.yaml LICENSE; do
    if [ -f "$src_dir/$f" ]; then
        install -m 0644 "$src_dir/$f" "$doc_dir/$(basename "$f")"
    fi
done

echo "build.sh: staged $(find "$destdir" -type f | wc -l) files under $destdir$prefix" >&2
