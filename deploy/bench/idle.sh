#!/usr/bin/env bash
# Idle CPU of the three-node demo cluster (issue 12 goal 4): starts
# `make demo`'s cluster (deploy/local/demo.sh: 3 nodes, 2 pools x 3
# members, default probes every 2 s, secure posture) on loopback, lets it
# settle, then reads each node's CPU time (utime+stime, /proc/PID/stat)
# over IDLE_SECONDS and prints it as a percentage of one core, beside the
# whole machine's busy share over the same window (other load).
#
#   IDLE_SETTLE=10   seconds between "cluster ready" and measuring
#   IDLE_SECONDS=30  measuring window
set -euo pipefail
cd "$(dirname "$0")/../.."
settle=${IDLE_SETTLE:-10}
window=${IDLE_SECONDS:-30}
[ -x bin/gwelb ] || { echo "run make build first" >&2; exit 1; }

log=$(mktemp)
setsid deploy/local/demo.sh >"$log" 2>&1 &
demo=$!
stop() { kill -KILL -- "-$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; rm -f "$log"; }
trap stop EXIT
deadline=$((SECONDS + 60))
until grep -q 'Ctrl-C stops everything' "$log"; do
	if ! kill -0 "$demo" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
		echo "the demo cluster did not come up:" >&2
		cat "$log" >&2
		exit 1
	fi
	sleep 0.5
done
sleep "$settle"

pids=()
for i in 1 2 3; do pids+=("$(pgrep -f "gwelb agent -config deploy/local/n$i.yaml")"); done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
declare -A before
for p in "${pids[@]}"; do before[$p]=$(ticks "$p"); done
read -r mb0 mt0 < <(machine)
sleep "$window"
read -r mb1 mt1 < <(machine)
hz=$(getconf CLK_TCK)
leader=$(GWELB_TOKEN="$(cat .demo/secrets/read-token)" GWELB_CACERT=.demo/secrets/ca/ca.pem \
	bin/gwelbctl --addr 127.0.0.1:7001 status -o json 2>/dev/null | sed -n 's/.*"leader": *"\([^"]*\)".*/\1/p' | head -1)
echo "# idle CPU of the three-node demo cluster over ${window}s ($(nproc) CPUs; machine ${settle}s after start: $(( (mb1 - mb0) * 100 / (mt1 - mt0) ))% busy overall)"
printf '%-6s %-9s %s\n' node role 'CPU % of one core'
for i in 1 2 3; do
	p=${pids[$((i - 1))]}
	role=follower
	[ "$leader" = "n$i" ] && role=leader
	printf '%-6s %-9s %s\n' "n$i" "$role" "$(awk -v a="${before[$p]}" -v b="$(ticks "$p")" -v hz="$hz" -v w="$window" 'BEGIN{printf "%.2f", (b-a)*100/hz/w}')"
done
