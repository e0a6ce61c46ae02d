#!/usr/bin/env bash
# Starts a three-node gwelb cluster on loopback in front of three frontend
# and three backend demo GWE servers, waits for a leader, prints what to
# try, and stops everything on Ctrl-C. State and logs go to .demo/.
#
# The cluster runs in the secure posture of docs/DESIGN.md §4, with no
# manual step: on the first start the script makes, under .demo/secrets/,
# a cluster CA, a certificate per node (IP SAN 127.0.0.1), an operator
# client certificate, a gossip key, a read-write and a read-only token, with
# bin/gwelb tls and bin/gwelb keygen; deploy/local/n*.yaml name those files.
# Later starts keep the secrets and begin with fresh node state.
set -euo pipefail
cd "$(dirname "$0")/../.."
state=.demo
secrets=$state/secrets
mkdir -p "$state"
find "$state" -mindepth 1 -maxdepth 1 ! -name secrets -exec rm -rf {} +
if [ ! -f "$secrets/read-token" ]; then
	rm -rf "$secrets"
	(
		umask 077
		mkdir -p "$secrets"
		bin/gwelb tls ca create -dir "$secrets/ca"
		for i in 1 2 3; do
			bin/gwelb tls cert create -ca-dir "$secrets/ca" -node "n$i" -ip 127.0.0.1 -out "$secrets"
		done
		bin/gwelb tls cert create -ca-dir "$secrets/ca" -client operator -out "$secrets"
		bin/gwelb keygen >"$secrets/gossip.key"
		bin/gwelb keygen >"$secrets/token"      # 32 random bytes, base64: a fine token
		bin/gwelb keygen >"$secrets/read-token" # written last: its presence means all is there
	) >/dev/null
	echo "made a CA, node and operator certificates, a gossip key and tokens in $secrets/"
fi
for i in 1 2 3; do
	bin/gwelb validate -config "deploy/local/n$i.yaml" >/dev/null
done
pids=()
cleanup() {
	trap - EXIT INT TERM
	[ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
	wait 2>/dev/null || true
	echo "demo stopped"
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
	bin/gwe-demo -addr "127.0.0.1:809$i" -name "GWE_F_$i" -prefix /frontend >"$state/gwe-frontend-$i.log" 2>&1 &
	pids+=($!)
	bin/gwe-demo -addr "127.0.0.1:909$i" -name "$i" -prefix /backend >"$state/gwe-backend-$i.log" 2>&1 &
	pids+=($!)
done
for i in 1 2 3; do
	bin/gwelb agent -config "deploy/local/n$i.yaml" >"$state/n$i.log" 2>&1 &
	pids+=($!)
done

export GWELB_TOKEN="$(cat "$secrets/token")" GWELB_CACERT="$secrets/ca/ca.pem"
export GWELB_CLIENT_CERT="$secrets/operator.pem" GWELB_CLIENT_KEY="$secrets/operator-key.pem"
deadline=$((SECONDS + 30))
# Ready when every node answers and names a leader (gwelbctl, not curl: a
# fresh machine may have no curl). -o json prints every field, "leader": ""
# too, so the match wants a name.
for addr in 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003; do
	until bin/gwelbctl --addr "$addr" --timeout 1s status -o json 2>/dev/null | grep -q '"leader": *"[^"]'; do
		if [ $SECONDS -ge $deadline ]; then
			echo "the cluster did not become ready; logs in $state/" >&2
			tail -n 5 "$state"/n*.log >&2
			exit 1
		fi
		sleep 0.2
	done
done
bin/gwelbctl --addr 127.0.0.1:7001 status

cat <<'MSG'

gwelb demo cluster is up (state and logs in .demo/):
  nodes n1 n2 n3     data plane http://127.0.0.1:8080, :8180, :8280   admin gRPC 127.0.0.1:7001-7003
  frontend GWE servers GWE_F_1..3 on 127.0.0.1:8091-8093, backend 1..3 on 127.0.0.1:9091-9093
  secure posture: Raft and node-to-node gRPC over mutual TLS (.demo/secrets/ca), gossip
  encrypted (.demo/secrets/gossip.key), admin API over TLS with a token

Dashboard (every node serves one, for the whole cluster): open in a browser on this machine
  http://127.0.0.1:8081/ui/   (n2: http://127.0.0.1:8181/ui/, n3: http://127.0.0.1:8281/ui/)
  and log in with the token that  cat .demo/secrets/token  prints
  (cat .demo/secrets/read-token for a read-only view). Drain a member there, or try
  curl -X POST 'http://127.0.0.1:9092/_demo/health?state=down' and watch its verdict change live.

Point gwelbctl at it (in another shell, from this directory):
  export GWELB_ADDR=127.0.0.1:7001
  export GWELB_TOKEN="$(cat .demo/secrets/token)"        # read-only: .demo/secrets/read-token
  export GWELB_CACERT=.demo/secrets/ca/ca.pem
  export GWELB_CLIENT_CERT=.demo/secrets/operator.pem GWELB_CLIENT_KEY=.demo/secrets/operator-key.pem

Try:
  bin/gwelbctl status
  for p in 8080 8180 8280; do curl -s -b 'ROUTEID=.2' http://127.0.0.1:$p/backend/x; done    # 2 2 2
  curl -s 'http://127.0.0.1:8180/frontend/x?alias=.GWE_F_3'                                # GWE_F_3
  bin/gwelbctl route backend .2 --all-nodes                                                # every node agrees
  bin/gwelbctl member drain backend 2 && bin/gwelbctl member list
  kill $(pgrep -f 'n1.yaml') ; bin/gwelbctl --addr 127.0.0.1:7002 status                  # kill n1: a new leader
  curl -s -b 'ROUTEID=.2' http://127.0.0.1:8180/backend/x                                  # still 2
  k=$(bin/gwelb keygen); bin/gwelbctl --addr 127.0.0.1:7002 keyring install "$k" &&
    bin/gwelbctl --addr 127.0.0.1:7002 keyring use "$k" &&
    bin/gwelbctl --addr 127.0.0.1:7002 keyring remove "$(cat .demo/secrets/gossip.key)"    # rotate the gossip key
  GWELB_TOKEN=$(cat .demo/secrets/read-token) GWELB_CLIENT_CERT= GWELB_CLIENT_KEY= \
    bin/gwelbctl member drain backend 3                                                    # read-only: exit 5

Ctrl-C stops everything.
MSG
wait
