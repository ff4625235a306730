# Shared by the load scripts in benches/ (sourced, not run): tools, ports, the upstream and the
# gateway's config. The caller sets WORK (a scratch directory) before using them.

# Fails naming the tool and the install command when one of them is missing.
need_tools() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool missing: run scripts/install-deps.sh bench" >&2; exit 1; }
  done
}

build_bench_binaries() {
  cargo build --release --locked --quiet --bin samlgate --example bench_login --example hyper_floor
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The top of an nginx config: one worker, its pid and error log in $WORK named after $1.
nginx_preamble() { # name
  cat <<NGINX
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
NGINX
}

# The upstream: nginx answering `return 200 "ok\n"` on 127.0.0.1:$1, its own process, pinned to
# CPU $2. A dashboard is a process of its own.
upstream_server_block() { echo "server { listen 127.0.0.1:$1; location / { return 200 \"ok\\n\"; } }"; }
start_upstream() { # port cpu
  cat > "$WORK/upstream.conf" <<NGINX
$(nginx_preamble upstream)
http { access_log off; $(upstream_server_block "$1") }
NGINX
  taskset -c "$2" nginx -c "$WORK/upstream.conf" -p "$WORK"
}

# nginx proxy_pass on 127.0.0.1:$2 to the upstream on port $1, with upstream keep-alive (the
# comparison's nginx), as directives of an `http` block.
nginx_proxy_directives() { # upstream-port listen-port
  cat <<NGINX
  upstream dashboard { server 127.0.0.1:$1; keepalive 128; }
  server {
    listen 127.0.0.1:$2;
    location / {
      proxy_pass http://dashboard;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
NGINX
}

# A gateway config on 127.0.0.1:$1 (admin $2) in front of the upstream on port $UP, with the
# session store $3, and the test IdP made by `bench_login idp "$WORK"`.
gateway_config() { # port admin store
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$1"
[upstream]
url = "http://127.0.0.1:$UP"
public_paths = ["/public/*"]
[saml]
idp_metadata_file = "$WORK/idp.xml"
[session]
secret = "bench-secret-0123456789abcdef0123456789abcdef"
store = "$3"
redis_key_prefix = "samlgate-bench:"
[log]
level = "error"
TOML
}

# A session cookie made by a real SAML login through the gateway at $1.
login_cookie() { ./target/release/examples/bench_login login "$WORK" "$1"; }

# Waits until something answers HTTP on 127.0.0.1:$1 (at most $2 seconds).
wait_http() { # port seconds
  local i
  for i in $(seq 1 $(( ${2:-10} * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$0: nothing answers on 127.0.0.1:$1" >&2
  exit 1
}
