#!/usr/bin/env bash
# Starts a throw-away Redis on 127.0.0.1:6379 unless one already answers there.
set -euo pipefail

ping_redis() {
  { exec 3<>/dev/tcp/127.0.0.1/6379; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  local line=""
  read -r -t 2 line <&3 || true
  exec 3>&- 3<&-
  [[ "$line" == +PONG* ]]
}

if ping_redis; then exit 0; fi
echo "ensure-redis: starting redis-server on 127.0.0.1:6379"
mkdir -p /tmp/samlgate-redis
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir /tmp/samlgate-redis --logfile /tmp/samlgate-redis/redis.log
for _ in $(seq 1 50); do
  if ping_redis; then exit 0; fi
  sleep 0.1
done
echo "ensure-redis: redis did not answer on 127.0.0.1:6379 (see /tmp/samlgate-redis/redis.log)" >&2
exit 1
