# syntax=docker/dockerfile:1
# batchd container image: a build stage with the -dev packages that runs docker/build.sh
# (the same script CI runs outside Docker), and a runtime stage with only the shared
# libraries, the stripped binary and the docs, running as an unprivileged user.
#
#   docker build -t batchd .
#   docker run --rm -p 8080:8080 -e BATCHD_WORKERS=2 batchd
#
# Base image: Debian 12.12 slim, pinned by tag and by the digest of its multi-arch index, so
# that a rebuild gets the same bytes; bump both together (the tag says which point release
# the digest is). The digest was read from public Dockerfiles that pin the same tag; no
# Docker engine or registry was reachable where this file was written, so verify it with
# `docker buildx imagetools inspect debian:12.12-slim` when you bump it.
#
# Size (estimated from Debian's Installed-Size, since no engine can build it here):
# debian:12.12-slim ~75 MB, plus libmicrohttpd12 225 kB, libjansson4 101 kB,
# libjpeg62-turbo 677 kB, libturbojpeg0 789 kB, libpng16-16 417 kB, libdeflate0 161 kB,
# libsqlite3-0 1.7 MB, liblua5.4-0 545 kB, liblcms2-2 ~420 kB, libwebp7 + libwebpmux3 +
# libwebpdemux2 ~600 kB, libhiredis0.14 95 kB (cluster mode's Redis client, SPEC §9; Redis
# itself runs from its own image: docker/compose.yaml, docker/k8s.yaml) (their other
# dependencies, libgnutls30 and zlib1g among them, are already in the slim base because apt
# needs them), plus the stripped binary (~1 MB) and docs: about 81 MB, under the 100 MB bar.

# Both stages' base, overridable for a build without a registry (`--build-arg BASE=IMAGE`,
# e.g. a Debian 12 made by debootstrap: tests/deploy/test_image_build.py); the default is
# the pin above.
ARG BASE=debian:12.12-slim@sha256:d5d3f9c23164ea16f31852f95bd5959aad1c5e854332fe00f7b3a20fcc9f635c
FROM ${BASE} AS build
# Dependencies first, in their own layer, so that editing the sources does not reinstall them.
COPY docker/build.sh /src/docker/build.sh
RUN /src/docker/build.sh --deps-only && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN BATCHD_BUILD_DIR=/tmp/build /src/docker/build.sh /out

FROM ${BASE} AS runtime
# Only the shared libraries the binary links against (tests/deploy/test_build_script.py
# checks this list against the binary's NEEDED entries).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libmicrohttpd12 libjansson4 libjpeg62-turbo libturbojpeg0 libpng16-16 libdeflate0 libsqlite3-0 liblua5.4-0 \
        liblcms2-2 libwebp7 libwebpmux3 libwebpdemux2 libhiredis0.14 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && groupadd --system --gid 10001 batchd \
    && useradd --system --uid 10001 --gid batchd --home-dir /var/lib/batchd \
        --shell /usr/sbin/nologin batchd \
    && install -d -o batchd -g batchd -m 0750 /var/lib/batchd \
    && install -d -o batchd -g batchd -m 0700 /var/lib/batchd-state

COPY --from=build /out/ /

# Configuration is by environment only: every flag has a BATCHD_* twin (SPEC §1), so the
# image needs no config file and no command line. These are the image's defaults; override
# any of them with `-e` / compose `environment:` / the k8s Deployment's `env:`.
# BATCHD_WORKERS=auto reads the container's CPU limit (cgroup cpu.max).
# BATCHD_STATE_DIR is the store of stored batches (SPEC §8, SQLite): beside the data dir, not
# in it (batchd refuses a state dir inside --data-dir), owned by the image's user.
ENV BATCHD_LISTEN=0.0.0.0:8080 \
    BATCHD_WORKERS=auto \
    BATCHD_DATA_DIR=/var/lib/batchd \
    BATCHD_STATE_DIR=/var/lib/batchd-state \
    BATCHD_LOG_FORMAT=json
# The store outlives the container only on a volume: name one (`-v batchd-state:/var/lib/
# batchd-state`), one per container. Two batchd on one state dir are refused at start (the
# second finds its lock held), so replicas never share it.
VOLUME ["/var/lib/batchd-state"]

WORKDIR /var/lib/batchd
USER 10001:10001
EXPOSE 8080
# batchd drains on SIGTERM (SPEC §1): /readyz turns 503, running batches finish within
# BATCHD_GRACE_PERIOD; give `docker stop -t` / compose stop_grace_period more than that.
STOPSIGNAL SIGTERM
# The probe is the binary itself: `batchd --healthcheck` reads the same BATCHD_LISTEN as the
# server, sends GET /healthz to it on loopback and exits 0 on a 200, 1 otherwise. That adds
# nothing to the image, where curl would add ~5 MB with its libraries and busybox's wget
# would add a whole toolbox to an image that otherwise has no network client, and it cannot
# disagree with the server about the port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["batchd", "--healthcheck"]
# Exec form: batchd is PID 1 and gets SIGTERM itself; it reaps its own workers.
ENTRYPOINT ["batchd"]
