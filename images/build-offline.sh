#!/bin/sh
# Build images/Dockerfile where no container registry is reachable and no Docker engine runs: the base
# image is made from Debian's packages with mmdebstrap (Debian 13 with python3 and python3-venv, from
# the mirror this machine's apt already uses), imported as a local image, and named through the
# Dockerfile's PYTHON_IMAGE argument. Where a registry is reachable, build as usual instead:
#   docker build -f images/Dockerfile -t sharedpg:0.1.0 .
#
#   images/build-offline.sh [TAG]        (run from anywhere; needs podman and mmdebstrap, as root)
# PODMAN overrides the podman command and its global options, e.g.
#   PODMAN="podman --storage-driver vfs --root /var/tmp/store --runroot /var/tmp/run"
set -eu
tag=${1:-localhost/sharedpg:0.1.0}
podman=${PODMAN:-podman --storage-driver vfs}
base=localhost/sharedpg-base:trixie
cd "$(dirname "$0")/.."

if ! $podman image exists "$base"; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print ($2 ~ /^\[/) ? $3 : $2; exit }' /etc/apt/sources.list)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates trixie "$work/base.tar" "$mirror"
    $podman import --quiet "$work/base.tar" "$base" >/dev/null
fi
# The build's pip and apt use this machine's CA certificates (which include a TLS-intercepting proxy's CA
# where there is one); nothing of them is written into a layer.
$podman build --quiet --network host --isolation chroot -v /etc/ssl/certs:/etc/ssl/certs:ro \
    --build-arg PYTHON_IMAGE="$base" \
    -t "$tag" -f images/Dockerfile . >/dev/null
echo "$tag"
