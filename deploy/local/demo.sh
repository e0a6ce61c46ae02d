#!/usr/bin/env bash
# Starts three frontend and three backend demo GWE servers and a gwelb node
# in front of them, all on loopback, and stops them all on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
state=.demo
mkdir -p "$state"
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
bin/gwelb agent -config deploy/examples/single.yaml >"$state/gwelb.log" 2>&1 &
pids+=($!)

deadline=$((SECONDS + 15))
until curl -fsS -o /dev/null http://127.0.0.1:8081/readyz 2>/dev/null; do
	if [ $SECONDS -ge $deadline ]; then
		echo "gwelb did not become ready; see $state/gwelb.log" >&2
		tail -5 "$state/gwelb.log" >&2
		exit 1
	fi
	sleep 0.2
done

cat <<'MSG'
gwelb demo is up (logs in .demo/):
  gwelb node           http://127.0.0.1:8080   ops: http://127.0.0.1:8081/readyz
  frontend GWE servers GWE_F_1..3 on 127.0.0.1:8091-8093
  backend GWE servers  1..3 on 127.0.0.1:9091-9093

Try:
  curl -i http://127.0.0.1:8080/backend/x                     # new session: Set-Cookie ROUTEID=.<route>
  curl -b 'ROUTEID=.2' http://127.0.0.1:8080/backend/x        # always 2
  curl 'http://127.0.0.1:8080/frontend/x?alias=.GWE_F_3'      # always GWE_F_3
  curl -X POST 'http://127.0.0.1:9092/_demo/health?state=down'  # make server 2 unhealthy
  tail -f .demo/gwelb.log                                     # access log

Ctrl-C stops everything.
MSG
wait
