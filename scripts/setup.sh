#!/usr/bin/env bash
# Installs what building, testing and benchmarking LogPipe need on a fresh
# Debian/Ubuntu machine (as root, or with sudo). Elsewhere, install the same
# by hand: a Swift 6.1+ toolchain, PCRE2 with its headers and pcre2grep
# (brew install pcre2), pkg-config, nats-server 2.9+, openssl, python3, and
# for benchmarks GNU time.
#
#   scripts/setup.sh          # build and test dependencies
#   scripts/setup.sh bench    # plus what the benchmarks use
set -euo pipefail

# System packages by purpose: the build links libpcre2-8 (regex stage); the
# tests compare the regex stage with pcre2grep, run a private nats-server, and
# make TLS certificates with openssl.
build_packages=(libpcre2-dev pcre2-utils pkg-config nats-server openssl)
bench_packages=(time python3 python3-venv curl gcc)

wanted=("${build_packages[@]}")
if [ "${1:-}" = "bench" ]; then wanted+=("${bench_packages[@]}"); fi

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
