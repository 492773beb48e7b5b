#!/usr/bin/env bash
# Installs what a fresh machine lacks for building, testing and running CAS Motion.
# Idempotent: quick when everything is already there.
set -euo pipefail

need_apt=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)

if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]} (apt-get)" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
    for c in clippy rustfmt; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
    done
fi
