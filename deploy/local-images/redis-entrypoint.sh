#!/bin/sh
# Debian's redis-server starts in protected mode without a configuration file and then refuses every other
# container; the public image turns that off, so this one does too (the port is published nowhere).
set -eu
if [ "${1:-}" = "redis-server" ]; then
    shift
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
