#!/usr/bin/env bash
# Builds OpenBao (a Vault-compatible server) from tools/openbao, or reuses a
# build cached outside the work tree under the hash of its go.sum, and
# prints the binary's path. Use it as:
#   export VESTIBULE_TEST_OPENBAO_BIN=$(scripts/test-vault.sh)
#   go test ./vaultkey/ ./internal/e2e/
# Tests start their own dev-mode server on a free loopback port.
# A cold build takes several minutes on two cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Hash the contents only: the clone's folder must not change the cache key.
sum=$(cat "$root/tools/openbao/go.sum" "$root/tools/openbao/main.go" | sha256sum | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vestibule"
bin="$cache/openbao-$sum"
if [ ! -x "$bin" ]; then
	mkdir -p "$cache"
	echo "building OpenBao into $bin (cold: several minutes)..." >&2
	(cd "$root/tools/openbao" && GOFLAGS=-mod=mod GONOSUMDB=github.com/openbao/go-kms-wrapping go build -o "$bin.tmp" .)
	mv "$bin.tmp" "$bin"
fi
echo "$bin"
