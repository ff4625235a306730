#!/usr/bin/env bash
# Load benchmark on loopback, side by side in one run, interleaved, pinned with taskset:
#   direct    wrk -> upstream (nginx `return 200`, its own process)
#   nginx     wrk -> nginx proxy_pass (upstream keep-alive) -> upstream
#   nginx-plain  the same with proxy_pass as nginx ships it: HTTP/1.0 to the upstream, a new
#             upstream connection per request (no `keepalive`): the weaker baseline, for reference
# The upstream is a separate nginx process, as a dashboard is: with one nginx worker serving
# both roles, the nginx proxy never paid the process switch that any separate proxy pays.
# UPSTREAM=shared restores that layout (the upstream in the proxying nginx's own worker).
#   samlgate  wrk -> samlgate (public path, memory store) -> upstream
#   samlgate-auth        wrk (with a session cookie) -> samlgate (memory store) -> upstream
#   samlgate-auth-redis  the same with the Redis session store
#   samlgate-forward-auth  wrk (with the cookie) -> samlgate /saml/auth (forward-auth answer, no upstream)
#   floor     wrk -> examples/hyper_floor: a bare proxy on samlgate's own crates (hyper's HTTP/1
#             server and connection API, one current-thread runtime, mimalloc) that does nothing
#             else: the most any gateway built on this stack can do here
# Prints req/s, p50, p99 per target (median of the rounds) and the ratios: of the medians, and
# the median and range of each round's ratio (a round runs every target back to back).
# Usage: benches/load.sh [seconds-per-run=10] [rounds=3] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}; ROUNDS=${2:-3}; CONNS=${3:-64}
NCPU=$(nproc)
LOAD_CPU=0; SERVER_CPU=$((NCPU > 1 ? 1 : 0))
WORK=$(mktemp -d /tmp/samlgate-bench.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; for p in "$WORK"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; true' EXIT

# shellcheck source=benches/common.sh
source benches/common.sh
need_tools nginx wrk taskset
build_bench_binaries
bash scripts/ensure-redis.sh

UP=$(free_port); NG=$(free_port); NGP=$(free_port); FL=$(free_port); SG=$(free_port); SGA=$(free_port); SGR=$(free_port); SGR_ADMIN=$(free_port); SG_ADMIN=$(free_port); SGA_ADMIN=$(free_port)

if [ "${UPSTREAM:-separate}" = separate ]; then
  start_upstream "$UP" "$SERVER_CPU"
  UPSTREAM_SERVER=""
else
  UPSTREAM_SERVER=$(upstream_server_block "$UP")
fi
cat > "$WORK/nginx.conf" <<NGINX
$(nginx_preamble nginx)
http {
  access_log off;
$(nginx_proxy_directives "$UP" "$NG")
  $UPSTREAM_SERVER
  server {
    listen 127.0.0.1:$NGP;
    location / {
      proxy_pass http://127.0.0.1:$UP;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
NGINX
taskset -c $SERVER_CPU nginx -c "$WORK/nginx.conf" -p "$WORK"

./target/release/examples/bench_login idp "$WORK"
gateway_config "$SG" "$SG_ADMIN" memory > "$WORK/sg.toml"
gateway_config "$SGA" "$SGA_ADMIN" memory > "$WORK/sga.toml"
gateway_config "$SGR" "$SGR_ADMIN" redis > "$WORK/sgr.toml"
for n in sg sga sgr; do
  taskset -c $SERVER_CPU ./target/release/samlgate serve --config "$WORK/$n.toml" 2>"$WORK/$n.log" &
done
taskset -c $SERVER_CPU ./target/release/examples/hyper_floor "127.0.0.1:$FL" "127.0.0.1:$UP" conn 2>"$WORK/floor.log" &
for port in "$SG" "$SGA" "$SGR" "$FL"; do wait_http "$port" 10; done

# Session cookies made by a real SAML login through each gateway.
COOKIE_MEM=$(login_cookie "http://127.0.0.1:$SGA")
COOKIE_REDIS=$(login_cookie "http://127.0.0.1:$SGR")

run() { # name url [cookie]
  local hdr=()
  [ -n "${3:-}" ] && hdr=(-H "Cookie: $3")
  taskset -c $LOAD_CPU wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "${hdr[@]}" "$2" > "$WORK/$1.$r.txt"
}
# TARGETS="nginx samlgate-auth" runs a subset (the ratios need their pairs).
read -r -a targets <<< "${TARGETS:-direct nginx nginx-plain floor samlgate samlgate-auth samlgate-auth-redis samlgate-forward-auth}"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    case $t in
      direct) run direct "http://127.0.0.1:$UP/public/x" ;;
      nginx) run nginx "http://127.0.0.1:$NG/public/x" ;;
      nginx-plain) run nginx-plain "http://127.0.0.1:$NGP/public/x" ;;
      floor) run floor "http://127.0.0.1:$FL/public/x" ;;
      samlgate) run samlgate "http://127.0.0.1:$SG/public/x" ;;
      samlgate-auth) run samlgate-auth "http://127.0.0.1:$SGA/private/x" "$COOKIE_MEM" ;;
      samlgate-auth-redis) run samlgate-auth-redis "http://127.0.0.1:$SGR/private/x" "$COOKIE_REDIS" ;;
      samlgate-forward-auth) run samlgate-forward-auth "http://127.0.0.1:$SGA/saml/auth" "$COOKIE_MEM" ;;
    esac
  done
done

python3 - "$WORK" "$ROUNDS" "${targets[@]}" <<'PY'
import re, statistics, sys
work, rounds, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s|m)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
res, per_round = {}, {}
for t in targets:
    rps, p50, p99, errs = [], [], [], 0
    for r in range(1, rounds + 1):
        txt = open(f"{work}/{t}.{r}.txt").read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", txt).group(1)))
        p50.append(ms(re.search(r"^\s+50%\s+(\S+)", txt, re.M).group(1)))
        p99.append(ms(re.search(r"^\s+99%\s+(\S+)", txt, re.M).group(1)))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", txt)
        errs += int(m.group(1)) if m else 0
    res[t] = (statistics.median(rps), statistics.median(p50), statistics.median(p99), errs)
    per_round[t] = rps
print(f"{'target':<22}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}")
for t, (a, b, c, e) in res.items():
    print(f"{t:<22}{a:>12.0f}{b:>10.3f}{c:>10.3f}{e:>9}")
print()
# (label, target, against, with p99)
for label, a, b, p99 in [
    ("samlgate/nginx", "samlgate", "nginx", True),
    ("samlgate/direct", "samlgate", "direct", True),
    ("floor/nginx", "floor", "nginx", True),
    ("auth(memory)/floor", "samlgate-auth", "floor", True),
    ("auth(memory)/nginx", "samlgate-auth", "nginx", True),
    ("auth(memory)/nginx-plain", "samlgate-auth", "nginx-plain", True),
    ("auth(redis)/auth(memory)", "samlgate-auth-redis", "samlgate-auth", False),
    ("forward-auth(/saml/auth)/auth proxy", "samlgate-forward-auth", "samlgate-auth", False),
]:
    if a in res and b in res:
        # Each round's pair ran back to back, so the per-round ratio is less exposed to the
        # machine's drift than the ratio of medians; both are printed, with the rounds' range.
        rounds = sorted(x / y for x, y in zip(per_round[a], per_round[b]))
        line = (f"{label} throughput {res[a][0] / res[b][0]:.2f}x"
                f"  (per round: median {statistics.median(rounds):.2f}x,"
                f" {rounds[0]:.2f}-{rounds[-1]:.2f}x)")
        if p99:
            line += f"  p99 {res[a][2] / res[b][2]:.2f}x"
        print(line)
PY
