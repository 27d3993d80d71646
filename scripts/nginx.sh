#!/usr/bin/env bash
# make prod and its tests put Debian's nginx in front of the replicas; install it if
# missing. The package's own daemon is not started (policy-rc.d refuses service starts).
set -e
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's nginx (for make prod)..."
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null 2>&1) || \
    (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null)
else
  echo "make prod needs nginx: run 'sudo apt-get install nginx'." >&2
  exit 1
fi
