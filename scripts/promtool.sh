#!/usr/bin/env bash
# promtool checks ops/prometheus/*.yml; it comes with Debian's prometheus package. The
# package's daemon is not started (policy-rc.d refuses service starts during install).
set -e
command -v promtool >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's prometheus (for promtool)..."
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1) || \
    (apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus >/dev/null)
else
  echo "The alert-rule tests need promtool: run 'sudo apt-get install prometheus'." >&2
  exit 1
fi
