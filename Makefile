# The two commands that do all set-up on a fresh Debian machine:
#   make demo   installs what is missing, builds, runs `samlgate demo`
#   make test   installs what is missing, starts Redis if needed, runs the whole suite
.PHONY: demo test build release check bench lint

CARGO ?= cargo

demo:
	bash scripts/install-deps.sh build
	$(CARGO) build --release --locked
	./target/release/samlgate demo

test:
	bash scripts/install-deps.sh build test e2e
	bash scripts/ensure-redis.sh
	$(CARGO) test --locked --all-targets
	sh scripts/saml-interop.sh
	sh scripts/scim-interop.sh

build:
	bash scripts/install-deps.sh build
	$(CARGO) build --release --locked

check: build
	./target/release/samlgate check --config config/samlgate.toml

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

bench:
	bash scripts/install-deps.sh build bench
	bash benches/load.sh
	bash benches/instructions.sh
	$(CARGO) run --release --locked --example bench_acs
