#!/bin/sh
# The base images docker-compose.yml needs, built on this host from Debian's packages, for a Docker engine
# that cannot pull from a registry (docs/operations.md, "Compose without a registry"):
#
#   PYTHON_IMAGE    Debian bookworm made with debootstrap (python3 3.11, pip, venv), imported with
#                   `docker import`: the base of both stages of the Dockerfile, in place of python:3.11-slim
#   REDIS_IMAGE     that base with Debian's redis-server (deploy/local-images/redis.Dockerfile)
#   POSTGRES_IMAGE  that base with Debian's postgresql-15 (deploy/local-images/postgres.Dockerfile)
#
# Run as root (debootstrap and chroot need it), with debootstrap installed (apt-get install debootstrap)
# and a Debian mirror reachable. An image that already exists is kept; REBUILD=1 builds all three again.
# It prints the three names as shell assignments, for `eval` or for .env:
#
#   eval "$(scripts/build_local_images.sh)" && docker compose build
set -eu

PYTHON_IMAGE=${PYTHON_IMAGE:-dispatcher-local/python:3.11-bookworm}
REDIS_IMAGE=${REDIS_IMAGE:-dispatcher-local/redis:bookworm}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-dispatcher-local/postgres:15-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=${LOCAL_IMAGES_DIR:-/var/tmp/dispatcher-local-images}
HERE=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "build_local_images: $*" >&2; }
have() { [ -z "${REBUILD:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$PYTHON_IMAGE"; then
    command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    root="$WORK/bookworm"
    rm -rf "$root"
    mkdir -p "$WORK"
    say "debootstrap bookworm into $root (a few minutes)"
    # python-is-python3: `python` on the PATH, as in python:3.11-slim (the Dockerfile and the health checks
    # call it by that name).
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
        bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { say "debootstrap failed; see $WORK/debootstrap.log"; exit 1; }
    # The image is the application's own, as python:3.11-slim is: pip may build wheels and venvs in it.
    rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # Certificate authorities this host added (a TLS-inspecting proxy's, say) so pip in the image build
    # trusts what the host trusts; none on an ordinary host.
    if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null 2>&1
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    say "importing $PYTHON_IMAGE"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$PYTHON_IMAGE" >/dev/null
    rm -rf "$root"
fi

build() {  # image, Dockerfile under deploy/local-images
    if ! have "$1"; then
        say "building $1"
        docker build --quiet --build-arg "BASE_IMAGE=$PYTHON_IMAGE" -t "$1" \
            -f "$HERE/deploy/local-images/$2" "$HERE/deploy/local-images" >/dev/null
    fi
}
build "$REDIS_IMAGE" redis.Dockerfile
build "$POSTGRES_IMAGE" postgres.Dockerfile

echo "PYTHON_IMAGE=$PYTHON_IMAGE"
echo "REDIS_IMAGE=$REDIS_IMAGE"
echo "POSTGRES_IMAGE=$POSTGRES_IMAGE"
