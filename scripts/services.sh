#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 for the tests: start them if
# they are installed but stopped; otherwise say in one sentence how to get them.
set -u
PGHOST=${PGHOST:-127.0.0.1}
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  fi
fi
if ! pg_up; then
  echo "PostgreSQL is not running on 127.0.0.1:5432: install it (apt-get install postgresql) or run 'docker compose up -d db redis', then run make test again." >&2
  exit 1
fi
if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 30); do redis_up && break; sleep 0.2; done
  fi
fi
if ! redis_up; then
  echo "Redis is not running on 127.0.0.1:6379: install it (apt-get install redis-server) or run 'docker compose up -d db redis', then run make test again." >&2
  exit 1
fi
