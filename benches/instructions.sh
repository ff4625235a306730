#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: what each proxy's own process
# executes in user space per request, under load on loopback. Unlike req/s on this shared,
# noisy machine, an instruction count repeats within a fraction of a percent, so a change of a
# few hundred instructions per request is visible. It counts neither the kernel (about half of
# a proxied request's CPU here) nor cache misses: it complements benches/load.sh, it does not
# replace it.
#   nginx          nginx proxy_pass with upstream keep-alive (one worker, no master process)
#   floor          examples/hyper_floor (a bare proxy on hyper's HTTP/1 server and connection API)
#   public         samlgate, a public path (memory store)
#   authenticated  samlgate with a session cookie made by a real SAML login (memory store)
# valgrind emulates no SHA extensions, so SHA-256 (the cookie's HMAC and the store key) runs in
# software under it; on a CPU with SHA-NI it is a small part of that. Its count is printed
# apart, and the totals are given with and without it.
# Usage: benches/instructions.sh [seconds=10] [connections=8]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10}; CONNS=${2:-8}
NCPU=$(nproc)
LOAD_CPU=0; SERVER_CPU=$((NCPU > 1 ? 1 : 0))
WORK=$(mktemp -d /tmp/samlgate-instr.XXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null; true' EXIT
# shellcheck source=benches/common.sh
source benches/common.sh
need_tools nginx wrk taskset valgrind callgrind_control callgrind_annotate
build_bench_binaries

UP=$(free_port); NG=$(free_port); FL=$(free_port); SG=$(free_port); SG_ADMIN=$(free_port)
start_upstream "$UP" "$SERVER_CPU"
./target/release/examples/bench_login idp "$WORK"
gateway_config "$SG" "$SG_ADMIN" memory > "$WORK/sg.toml"
# The same proxy as benches/load.sh's nginx target, in the foreground so valgrind runs it.
cat > "$WORK/nginx.conf" <<NGINX
daemon off;
master_process off;
$(nginx_preamble nginx)
http {
  access_log off;
$(nginx_proxy_directives "$UP" "$NG")
}
NGINX
# One worker: the instructions of one event loop, as the floor has.
export SAMLGATE_SERVER__WORKERS=1

# measure NAME PORT URL COOKIE? -- COMMAND...: runs COMMAND under callgrind with counting off,
# warms it up, counts DUR seconds of wrk load and writes "NAME requests Ir sha_Ir" to results.
measure() {
  local name=$1 port=$2 url=$3 cookie=$4; shift 5
  taskset -c "$SERVER_CPU" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/cg.$name" "$@" 2>"$WORK/$name.valgrind.log" &
  local pid=$!
  wait_http "$port" 120
  [ "$cookie" = login ] && cookie=$(login_cookie "http://127.0.0.1:$port")
  local hdr=()
  [ -n "$cookie" ] && hdr=(-H "Cookie: $cookie")
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d3s "${hdr[@]}" "$url" > /dev/null 2>&1
  callgrind_control -i on "$pid" > /dev/null 2>&1
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" "${hdr[@]}" "$url" > "$WORK/$name.wrk"
  callgrind_control -i off "$pid" > /dev/null 2>&1
  callgrind_control -d "$pid" > /dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q "Non-2xx" "$WORK/$name.wrk"; then
    echo "instructions.sh: $name answered non-2xx responses:" >&2; cat "$WORK/$name.wrk" >&2; exit 1
  fi
  local requests total sha
  requests=$(grep -oE '[0-9]+ requests in' "$WORK/$name.wrk" | cut -d' ' -f1)
  total=$(callgrind_annotate "$WORK/cg.$name.1" | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t + 0}')
  sha=$(callgrind_annotate --threshold=100 "$WORK/cg.$name.1" | awk '/sha2::sha256::soft::compress/ {gsub(",", "", $1); s += $1} END {print s + 0}')
  echo "$name $requests $total $sha" >> "$WORK/results"
}

measure nginx "$NG" "http://127.0.0.1:$NG/public/x" "" -- nginx -c "$WORK/nginx.conf" -p "$WORK"
measure floor "$FL" "http://127.0.0.1:$FL/public/x" "" -- \
  ./target/release/examples/hyper_floor "127.0.0.1:$FL" "127.0.0.1:$UP" conn
measure public "$SG" "http://127.0.0.1:$SG/public/x" "" -- \
  ./target/release/samlgate serve --config "$WORK/sg.toml"
measure authenticated "$SG" "http://127.0.0.1:$SG/private/x" login -- \
  ./target/release/samlgate serve --config "$WORK/sg.toml"

python3 - "$WORK/results" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
res = {name: (int(req), int(ir), int(sha)) for name, req, ir, sha in rows}
print(f"{'target':<16}{'requests':>10}{'Ir/request':>12}{'of it SHA-256':>15}{'without':>10}{'/ nginx':>9}{'/ floor':>9}")
nginx = res["nginx"][1] / res["nginx"][0]
floor = res["floor"][1] / res["floor"][0]
for name, (req, ir, sha) in res.items():
    per, per_sha = ir / req, sha / req
    print(f"{name:<16}{req:>10}{per:>12.0f}{per_sha:>15.0f}{per - per_sha:>10.0f}"
          f"{(per - per_sha) / nginx:>8.2f}x{(per - per_sha) / floor:>8.2f}x")
PY
