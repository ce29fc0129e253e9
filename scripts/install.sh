#!/usr/bin/env bash
# Installs LogPipe as a systemd service on this machine (as root):
#   /usr/local/bin/logpipe                      the release binary
#   /etc/systemd/system/logpipe.service         the unit (packaging/logpipe.service)
#   /etc/logpipe/pipeline.yaml                  an example, kept if one exists
#   /var/lib/logpipe                            data_dir, owned by the logpipe user
#   the logpipe system user (in group adm, to read /var/log)
#   man page logpipe(1) and bash, zsh and fish completions
# Then: edit /etc/logpipe/pipeline.yaml; systemctl enable --now logpipe.
#
#   scripts/install.sh                    # builds the release binary first
#   scripts/install.sh --binary PATH      # installs that binary instead
#   scripts/install.sh --root DIR         # stages everything under DIR: no
#                                         # user, no systemctl (packaging, tests)
#   scripts/install.sh --no-man           # skips the man page (it needs a build)
set -euo pipefail
cd "$(dirname "$0")/.."

root="" binary="" man=yes prefix=/usr/local
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --prefix) prefix="${2:?--prefix needs a path}"; shift 2 ;;
    --no-man) man=no; shift ;;
    *) echo "install: unknown argument '$1' (see the comment at the top of $0)" >&2; exit 2 ;;
  esac
done
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install: run as root (or stage with --root DIR)" >&2
  exit 1
fi
if [ -z "$binary" ]; then binary="$(scripts/build-release.sh)"; fi
[ -x "$binary" ] || { echo "install: $binary is not an executable" >&2; exit 1; }

install -D -m 0755 "$binary" "$root$prefix/bin/logpipe"
unit="$(mktemp)"
trap 'rm -f "$unit"' EXIT
sed "s|/usr/local/bin/logpipe|$prefix/bin/logpipe|g" packaging/logpipe.service > "$unit"
install -D -m 0644 "$unit" "$root/etc/systemd/system/logpipe.service"
if [ -f "$root/etc/logpipe/pipeline.yaml" ]; then
  echo "install: keeping $root/etc/logpipe/pipeline.yaml"
else
  install -D -m 0640 packaging/pipeline.yaml "$root/etc/logpipe/pipeline.yaml"
fi
install -d -m 0750 "$root/var/lib/logpipe"

# Shell completions, from the binary itself (swift-argument-parser).
"$binary" --generate-completion-script bash | install -D -m 0644 /dev/stdin "$root/usr/share/bash-completion/completions/logpipe"
"$binary" --generate-completion-script zsh | install -D -m 0644 /dev/stdin "$root/usr/share/zsh/vendor-completions/_logpipe"
"$binary" --generate-completion-script fish | install -D -m 0644 /dev/stdin "$root/usr/share/fish/vendor_completions.d/logpipe.fish"

# The man page, from swift-argument-parser's generate-manual plugin.
if [ "$man" = yes ]; then
  swift package --allow-writing-to-package-directory generate-manual --configuration debug >/dev/null
  install -D -m 0644 .build/plugins/GenerateManual/outputs/logpipe/logpipe.1 "$root$prefix/share/man/man1/logpipe.1"
fi

if [ -z "$root" ]; then
  if ! id logpipe >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/logpipe --shell /usr/sbin/nologin logpipe
  fi
  if getent group adm >/dev/null; then usermod -a -G adm logpipe; fi
  chown logpipe:logpipe /var/lib/logpipe
  chgrp logpipe /etc/logpipe/pipeline.yaml
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  echo "install: done; edit /etc/logpipe/pipeline.yaml, then: systemctl enable --now logpipe"
else
  echo "install: staged under $root"
fi
