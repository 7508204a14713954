#!/usr/bin/env bash
# Installs what building skiff and running its demo and tests needs on Debian (as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail

pkgs=(ca-certificates curl gcc libc6-dev python3 docker-registry busybox-static procps iproute2 time umoci openssl util-linux libcap2-bin nftables iptables systemd)
if ! command -v cargo >/dev/null 2>&1 && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
    # Debian 12's rustc is too old; rustc-web/cargo-web are current and from Debian too.
    pkgs+=(rustc-web cargo-web)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps.sh: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # rustc-web only exists in newer point releases' lists; fall back to the plain names.
    if printf '%s\n' "${missing[@]}" | grep -q -- '-web$' && ! apt-cache show rustc-web >/dev/null 2>&1; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sed 's/-web$//')
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts its own registry service on :5000 when the package is installed; skiff's
# scripts run their own on loopback and leave that one alone.
