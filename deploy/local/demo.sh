#!/usr/bin/env bash
# Starts a three-node gwelb cluster on loopback in front of three frontend
# and three backend demo GWE servers, waits for a leader, prints what to
# try, and stops everything on Ctrl-C. State and logs go to .demo/.
set -euo pipefail
cd "$(dirname "$0")/../.."
state=.demo
rm -rf "$state"
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
for i in 1 2 3; do
	bin/gwelb agent -config "deploy/local/n$i.yaml" >"$state/n$i.log" 2>&1 &
	pids+=($!)
done

export GWELB_TOKEN=demo-token
deadline=$((SECONDS + 30))
# Ready when every node answers and names a leader (gwelbctl, not curl: a
# fresh machine may have no curl).
for addr in 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003; do
	until bin/gwelbctl --addr "$addr" --timeout 1s status -o json 2>/dev/null | grep -q '"leader"'; do
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

Try (in another shell, from this directory):
  export GWELB_TOKEN=demo-token
  bin/gwelbctl status
  for p in 8080 8180 8280; do curl -s -b 'ROUTEID=.2' http://127.0.0.1:$p/backend/x; done    # 2 2 2
  curl -s 'http://127.0.0.1:8180/frontend/x?alias=.GWE_F_3'                                # GWE_F_3
  bin/gwelbctl route backend .2 --all-nodes                                                # every node agrees
  bin/gwelbctl member drain backend 2 && bin/gwelbctl member list
  kill $(pgrep -f 'n1.yaml') ; bin/gwelbctl --addr 127.0.0.1:7002 status                  # kill n1: a new leader
  curl -s -b 'ROUTEID=.2' http://127.0.0.1:8180/backend/x                                  # still 2

Ctrl-C stops everything.
MSG
wait
