#!/usr/bin/env bash
# Build the Dockerfile's base image (python:3.11-slim-bookworm) locally, for hosts that reach Debian's
# package mirror but no container registry. The result is Debian bookworm's own Python 3.11 (the
# official image builds 3.11 from source into /usr/local instead): close enough to build and size
# the image, not a replacement for the real base on Render.
#
#     sudo deploy/build-local-base.sh [TAG]      (needs debootstrap and podman)
set -euo pipefail

tag="${1:-python:3.11-slim-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$mirror"
# What the slim image leaves out too: package lists, caches and docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/*

tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "localhost/$tag"
podman image ls "localhost/$tag"
