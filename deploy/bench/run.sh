#!/usr/bin/env bash
# deploy/bench/run.sh — side-by-side throughput/latency benchmark (wrk) of
#   direct  : the GWE demo server "2" hit directly (no balancer)
#   gwelb   : bin/gwelb                        (gwelb-backend.yaml.tmpl)
#   nginx   : the vendor guide's Backend config (nginx-backend.conf.tmpl)
#   haproxy : equivalent cookie stickiness, forwarding the cookie and
#             X-Forwarded-For/-Host/-Proto as gwelb does (haproxy.cfg.tmpl)
#   haproxy-min : the same stickiness forwarding neither (haproxy-min.cfg.tmpl)
#   apache  : the guide's mod_proxy_balancer    (apache-backend.conf.tmpl)
# all in front of the same three bin/gwe-demo backends (routes 1, 2, 3) on
# 127.0.0.1, with the same wrk settings, in three scenarios:
#   sticky : every request carries "Cookie: ROUTEID=.2" (must reach server 2)
#   alias  : every request is GET /frontend/x?alias=.2, the Frontend pool's
#            query parameter (must reach server 2; the guide's Frontend
#            samples for nginx and Apache, HAProxy's use-server on urlp)
#   new    : no cookie (every request is a new session: round-robin + insert)
#   sticky-cap, alias-cap, new-cap : the same with each balancer held to BENCH_CAP% (50)
#            of one CPU by a cgroup CPU quota, so that the balancer, not wrk
#            and the servers, is what runs out: req/s then follows the
#            balancer's own CPU per request (needs a writable cgroup cpu
#            controller, v1 or v2; without one these scenarios are skipped)
# The demo servers run with -no-echo: their answer does not grow with the
# headers a balancer forwards (they share CPU 0 with wrk, the busier CPU, so
# echoing gwelb's X-Forwarded-* and cookie back cost gwelb ~8% of its req/s
# against HAProxy, which forwarded neither in the config now haproxy-min).
# For the same reason the ratios are to haproxy, which forwards what gwelb
# forwards: every extra header is parsed on CPU 0, and the least-work config
# ran 3-9% more req/s with the servers doing less (haproxy-min column).
# Before measuring, every balancer is checked to route ROUTEID=.N to server N
# and to insert a cookie that matches the server that answered; any mismatch
# aborts the run.
#
# CPU split (2+ CPUs and taskset available): balancers on CPU 1, wrk and the
# demo servers on CPU 0. Every balancer gets one CPU's worth of execution:
# nginx worker_processes 1, haproxy nbthread 1, gwelb GOMAXPROCS=1, Apache
# mpm_event with its defaults (all its processes pinned to CPU 1 too).
#
# Output: a table on stdout (also out/results.md), JSON in out/results.json,
# raw wrk output in out/raw/, rendered configs in out/configs/.
#
# Environment (all optional):
#   BENCH_DURATION=5s BENCH_CONNECTIONS=32 BENCH_THREADS=1 BENCH_WARMUP=2s
#   BENCH_PATH=/backend/x
#   BENCH_TARGETS="direct gwelb haproxy haproxy-min nginx apache" (gwelb and haproxy
#                             measured one right after the other in every round)
#   BENCH_SCENARIOS="sticky alias new sticky-cap alias-cap new-cap"
#   BENCH_CAP=50              percent of one CPU each balancer gets in the -cap
#                             scenarios (a quota per 10 ms period)
#   BENCH_ROUNDS=3            repeat every run (wrk and streams), report medians and
#                             the median of each round's ratios: a shared VM runs
#                             35% slower for a minute at a time, and one round
#                             puts a target in one phase and its rival in another
#   BENCH_PORT_BASE=18400     first port tried; 12 free ports are picked upward
#   BENCH_OUT=deploy/bench/out
#   BENCH_NO_PIN=1            do not pin with taskset
#   BENCH_SKIP_BUILD=1        do not build bin/gwelb bin/gwe-demo
#   BENCH_KEEP_RUNDIR=1       keep the temp dir with configs and logs
#   BENCH_STREAMS=0           skip the second table (deploy/bench/streams: 16 MiB
#                             bodies both ways in MB/s, WebSocket echo messages/s,
#                             memory per idle client connection)
#   BENCH_IDLE_CONNS=500      idle connections for the memory figure
#   GWELB_BIN=bin/gwelb GWE_DEMO_BIN=bin/gwe-demo
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "${SCRIPT_DIR}/../.." && pwd)
cd "${REPO_ROOT}"
export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"

DURATION=${BENCH_DURATION:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-2s}
REQ_PATH=${BENCH_PATH:-/backend/x}
TARGETS=${BENCH_TARGETS:-direct gwelb haproxy haproxy-min nginx apache}
SCENARIOS=${BENCH_SCENARIOS:-sticky alias new sticky-cap alias-cap new-cap}
CAP=${BENCH_CAP:-50}
ROUNDS=${BENCH_ROUNDS:-3}
PORT_BASE=${BENCH_PORT_BASE:-18400}
OUT_DIR=${BENCH_OUT:-${SCRIPT_DIR}/out}
GWELB_BIN=${GWELB_BIN:-${REPO_ROOT}/bin/gwelb}
GWE_DEMO_BIN=${GWE_DEMO_BIN:-${REPO_ROOT}/bin/gwe-demo}
APACHE_MODDIR=${APACHE_MODDIR:-/usr/lib/apache2/modules}
NGINX_MIME_TYPES=${NGINX_MIME_TYPES:-/etc/nginx/mime.types}
STICKY_COOKIE='ROUTEID=.2'
ALIAS_PATH='/frontend/x?alias=.2'
READY_TIMEOUT=20 # seconds

log() { printf '[bench] %s\n' "$*" >&2; }

RUNDIR=""
PIDS=()
NAMES=()
POLICY_RC_CREATED=""

dump_logs() {
  [[ -n ${RUNDIR} && -d ${RUNDIR} ]] || return 0
  local f
  for f in "${RUNDIR}"/*.log; do
    [[ -s $f ]] || continue
    printf '[bench] ---- %s (last 20 lines) ----\n' "${f##*/}" >&2
    tail -n 20 "$f" >&2 || true
  done
}

die() {
  printf '\n[bench] FAIL: %s\n' "$*" >&2
  dump_logs
  exit 1
}

cleanup() {
  local rc=$? i pid deadline
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  deadline=$((SECONDS + 10))
  for pid in "${PIDS[@]}"; do
    while kill -0 "${pid}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  done
  if [[ -n ${POLICY_RC_CREATED} ]]; then
    rm -f "${POLICY_RC_CREATED}" 2>/dev/null || sudo rm -f "${POLICY_RC_CREATED}" || true
  fi
  cap_remove
  if [[ -n ${RUNDIR} && -d ${RUNDIR} ]]; then
    if [[ ${BENCH_KEEP_RUNDIR:-0} == 1 ]]; then
      log "kept run dir ${RUNDIR}"
    else
      rm -rf "${RUNDIR}"
    fi
  fi
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -------------------------------------------------------------- CPU cap ----

# The -cap scenarios hold each balancer to CAP% of one CPU. Every balancer
# (with its child processes: nginx's and Apache's workers) runs in a cgroup
# of its own from its start, unlimited but in the -cap runs, where a CPU
# quota of CAP% of a CAP_PERIOD_US period applies. wrk and the servers then
# keep up, and req/s follows the balancer's CPU per request. The short
# period keeps a throttled balancer's pauses short (at most the rest of a
# 10 ms period), which the capped rows' latencies include.
CAP_PERIOD_US=10000
CG_VERSION="" CG_BASE="" CAP_NOTE=""
declare -A CG=() # target -> its cgroup directory

# cap_init: find a cgroup CPU controller this script may use (v1's cpu
# hierarchy, or v2 with cpu enabled for children); CG_VERSION stays empty
# without one, and CAP_NOTE says why.
cap_init() {
  [[ ${CAP} =~ ^[0-9]+$ ]] && ((CAP >= 1 && CAP <= 100)) || die "BENCH_CAP must be 1-100 (percent of one CPU), got '${CAP}'"
  if [[ -w /sys/fs/cgroup/cpu/cgroup.procs && -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
    CG_VERSION=1 CG_BASE=/sys/fs/cgroup/cpu
  elif [[ -w /sys/fs/cgroup/cgroup.subtree_control ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null &&
    { grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control; } 2>/dev/null; then
    CG_VERSION=2 CG_BASE=/sys/fs/cgroup
  else
    CAP_NOTE="no writable cgroup CPU controller (v1 /sys/fs/cgroup/cpu or v2 with cpu): the -cap scenarios are skipped"
    return 0
  fi
  CAP_NOTE="-cap scenarios: each balancer and its child processes held to ${CAP}% of one CPU (cgroup v${CG_VERSION} CPU quota $((CAP * CAP_PERIOD_US / 100)) us per ${CAP_PERIOD_US} us)"
}

# cap_join T: put target T's processes in a cgroup of their own, unlimited.
cap_join() {
  local t=$1 dir p pids i=0
  [[ -n ${CG_VERSION} && -n ${TPID[$t]-} ]] || return 0
  dir="${CG_BASE}/gwelb-bench.$$.${t}"
  mkdir "${dir}" || die "cannot create cgroup ${dir}"
  CG[$t]=${dir}
  cap_set "$t" off
  pids=("${TPID[$t]}")
  while ((i < ${#pids[@]})); do
    p=${pids[i]}
    ((i++)) || true
    echo "${p}" >"${dir}/cgroup.procs" 2>/dev/null || die "cannot move ${t} (pid ${p}) into ${dir}"
    # shellcheck disable=SC2207
    pids+=($(pgrep -P "${p}" || true))
  done
}

# cap_set T on|off: apply or lift T's CPU quota.
cap_set() {
  local dir=${CG[$1]-} quota=-1
  [[ -n ${dir} ]] || return 0
  [[ $2 == on ]] && quota=$((CAP * CAP_PERIOD_US / 100))
  if [[ ${CG_VERSION} == 1 ]]; then
    echo -1 >"${dir}/cpu.cfs_quota_us" && echo "${CAP_PERIOD_US}" >"${dir}/cpu.cfs_period_us" &&
      echo "${quota}" >"${dir}/cpu.cfs_quota_us"
  else
    [[ ${quota} == -1 ]] && quota=max
    echo "${quota} ${CAP_PERIOD_US}" >"${dir}/cpu.max"
  fi || die "cannot set the CPU quota of ${dir}"
}

# cap_remove: remove the cgroups (their processes are gone by then; an
# exiting child may take a moment).
cap_remove() {
  local dir n
  for dir in "${CG[@]}"; do
    for ((n = 0; n < 20; n++)); do
      rmdir "${dir}" 2>/dev/null && break
      [[ -d ${dir} ]] || break
      sleep 0.1
    done
  done
}

# ---------------------------------------------------------------- tools ----

ensure_tools() {
  local missing=() t sudo=()
  for t in wrk nginx haproxy apache2; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [[ -f ${APACHE_MODDIR}/mod_proxy_balancer.so ]] || missing+=(apache2-modules)
  ((${#missing[@]} == 0)) && return 0
  log "missing: ${missing[*]} -> apt-get install -y wrk nginx-light haproxy apache2"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install wrk nginx haproxy apache2 yourself"
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install ${missing[*]}"
    sudo=(sudo)
  fi
  # Keep the packages' maintainer scripts from starting system-wide daemons
  # (nginx and apache2 would both grab :80); this benchmark starts its own.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    POLICY_RC_CREATED=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "${POLICY_RC_CREATED}" >/dev/null
    "${sudo[@]}" chmod 755 "${POLICY_RC_CREATED}"
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y wrk nginx-light haproxy apache2
  if [[ -n ${POLICY_RC_CREATED} ]]; then
    "${sudo[@]}" rm -f "${POLICY_RC_CREATED}"
    POLICY_RC_CREATED=""
  fi
  for t in wrk nginx haproxy apache2; do
    command -v "$t" >/dev/null 2>&1 || die "$t still missing after apt-get install"
  done
}

build_bins() {
  if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then
    log "BENCH_SKIP_BUILD=1: using existing ${GWELB_BIN} ${GWE_DEMO_BIN}"
  elif [[ -f Makefile ]] && make -n build >/dev/null 2>&1; then
    log "make build"
    make build >&2 || die "make build failed (or run with BENCH_SKIP_BUILD=1 and existing bin/)"
  else
    log "go build -o bin/ ./cmd/gwelb ./cmd/gwe-demo"
    mkdir -p bin
    go build -o bin/ ./cmd/gwelb ./cmd/gwe-demo >&2 || die "go build failed (or run with BENCH_SKIP_BUILD=1 and existing bin/)"
  fi
  [[ -x ${GWE_DEMO_BIN} ]] || die "${GWE_DEMO_BIN} not found (make build)"
  if [[ " ${TARGETS} " == *" gwelb "* ]]; then
    [[ -x ${GWELB_BIN} ]] || die "${GWELB_BIN} not found (make build)"
  fi
}

# ---------------------------------------------------------------- ports ----

port_in_use() { { : <>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; }

NEXT_PORT=${PORT_BASE}
free_port() { # sets PORT
  while port_in_use "${NEXT_PORT}"; do
    NEXT_PORT=$((NEXT_PORT + 1))
    ((NEXT_PORT < PORT_BASE + 1000)) || die "no free port in ${PORT_BASE}..$((PORT_BASE + 999))"
  done
  PORT=${NEXT_PORT}
  NEXT_PORT=$((NEXT_PORT + 1))
}

# ----------------------------------------------------------------- http ----

send_request() { # send_request PORT PATH COOKIE (to stdout)
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUser-Agent: gwelb-bench\r\n' "$2" "$1"
  if [[ -n $3 ]]; then printf 'Cookie: %s\r\n' "$3"; fi
  printf 'Connection: close\r\n\r\n'
}

# http_get PORT PATH [COOKIE]: one HTTP/1.1 request over bash's /dev/tcp (no
# curl needed). Sets H_STATUS, H_SERVER (X-GWE-Server), H_SETCOOKIE (all
# Set-Cookie values joined by " | ") and H_BODY (first body line).
http_get() {
  local port=$1 path=$2 cookie=${3-} fd line inbody=0 chunked=0
  H_STATUS="" H_SERVER="" H_SETCOOKIE="" H_BODY=""
  { exec {fd}<>"/dev/tcp/127.0.0.1/${port}"; } 2>/dev/null || return 1
  if ! send_request "${port}" "${path}" "${cookie}" >&"${fd}"; then
    exec {fd}>&-
    return 1
  fi
  while IFS= read -r -t 5 -u "${fd}" line || [[ -n ${line} ]]; do
    line=${line%$'\r'}
    if ((inbody)); then
      if ((chunked)); then chunked=0; continue; fi # skip the chunk-size line
      H_BODY=${line}
      break
    fi
    if [[ -z ${H_STATUS} ]]; then
      H_STATUS=$(awk '{print $2}' <<<"${line}")
    elif [[ -z ${line} ]]; then
      inbody=1
    else
      case ${line,,} in
      x-gwe-server:*) H_SERVER=${line#*:} H_SERVER=${H_SERVER# } ;;
      set-cookie:*) H_SETCOOKIE+="${H_SETCOOKIE:+ | }${line#*: }" ;;
      transfer-encoding:*chunked*) chunked=1 ;;
      esac
    fi
  done
  exec {fd}>&-
  [[ -n ${H_STATUS} ]]
}

# ------------------------------------------------------------- processes ----

# start NAME CPU CMD...: start CMD in the background (pinned to CPU when
# pinning is on), output to RUNDIR/NAME.log.
start() {
  local name=$1 cpu=$2
  shift 2
  local pin=()
  [[ -n ${cpu} && ${PIN} == 1 ]] && pin=(taskset -c "${cpu}")
  "${pin[@]}" "$@" >"${RUNDIR}/${name}.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("${name}")
  LAST_PID=$!
}

# check_alive WHEN: every process this script started must still run. (Other
# tooling on a shared machine that kills processes by name shows up here.)
check_alive() {
  local i
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
      die "${NAMES[i]} (pid ${PIDS[i]}) is gone ${1}: it exited or was killed from outside this script (see ${NAMES[i]}.log)"
    fi
  done
}

# wait_http NAME PID PORT PATH [COOKIE]: poll until PORT answers PATH with 200.
wait_http() {
  local name=$1 pid=$2 port=$3 path=$4 cookie=${5-}
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "${pid}" 2>/dev/null || die "${name} exited during startup (see ${name}.log)"
    if http_get "${port}" "${path}" "${cookie}" && [[ ${H_STATUS} == 200 ]]; then
      return 0
    fi
    sleep 0.05
  done
  die "${name} not ready on 127.0.0.1:${port}${path} after ${READY_TIMEOUT}s (last status '${H_STATUS}')"
}

render() { # render TEMPLATE OUT
  sed -e "s|@RUNDIR@|${RUNDIR}|g" \
    -e "s|@LISTEN_PORT@|${LISTEN_PORT}|g" \
    -e "s|@OPS_PORT@|${OPS_PORT}|g" \
    -e "s|@RAFT_PORT@|${RAFT_PORT}|g" \
    -e "s|@GOSSIP_PORT@|${GOSSIP_PORT}|g" \
    -e "s|@GRPC_PORT@|${GRPC_PORT}|g" \
    -e "s|@B1_PORT@|${B_PORT[1]}|g" \
    -e "s|@B2_PORT@|${B_PORT[2]}|g" \
    -e "s|@B3_PORT@|${B_PORT[3]}|g" \
    -e "s|@APACHE_MODDIR@|${APACHE_MODDIR}|g" \
    -e "s|@NGINX_MIME_TYPES@|${NGINX_MIME_TYPES}|g" \
    -e "s|@APACHE_USER_LINE@|${APACHE_USER_LINE}|g" \
    -e "s|@APACHE_GROUP_LINE@|${APACHE_GROUP_LINE}|g" \
    "${SCRIPT_DIR}/$1" >"$2"
  if grep -q '@[A-Z0-9_]*@' "$2"; then die "unsubstituted placeholder in $2"; fi
  # Never start a config that points anywhere but loopback.
  if grep -Eo '([0-9]{1,3}\.){3}[0-9]{1,3}' "$2" | grep -vqx '127\.0\.0\.1'; then
    die "non-loopback address in rendered $2"
  fi
  mkdir -p "${OUT_DIR}/configs"
  cp "$2" "${OUT_DIR}/configs/"
}

declare -A TPORT=() # target -> port wrk hits
declare -A TPID=()

start_target() {
  local t=$1
  case $t in
  direct)
    TPORT[direct]=${B_PORT[2]}
    ;;
  gwelb)
    free_port; LISTEN_PORT=${PORT}
    free_port; OPS_PORT=${PORT}
    free_port; RAFT_PORT=${PORT}
    free_port; GOSSIP_PORT=${PORT}
    free_port; GRPC_PORT=${PORT}
    render gwelb-backend.yaml.tmpl "${RUNDIR}/gwelb-backend.yaml"
    start gwelb "${LB_CPU}" env GOMAXPROCS=1 "${GWELB_BIN}" agent -config "${RUNDIR}/gwelb-backend.yaml"
    TPID[gwelb]=${LAST_PID}
    TPORT[gwelb]=${LISTEN_PORT}
    wait_http gwelb "${LAST_PID}" "${OPS_PORT}" /readyz
    ;;
  nginx)
    free_port; LISTEN_PORT=${PORT}
    render nginx-backend.conf.tmpl "${RUNDIR}/nginx-backend.conf"
    nginx -t -p "${RUNDIR}" -c "${RUNDIR}/nginx-backend.conf" >"${RUNDIR}/nginx-t.log" 2>&1 ||
      die "nginx -t failed: $(cat "${RUNDIR}/nginx-t.log")"
    start nginx "${LB_CPU}" nginx -p "${RUNDIR}" -c "${RUNDIR}/nginx-backend.conf"
    TPID[nginx]=${LAST_PID}
    TPORT[nginx]=${LISTEN_PORT}
    ;;
  haproxy | haproxy-min)
    free_port; LISTEN_PORT=${PORT}
    render "$t.cfg.tmpl" "${RUNDIR}/$t.cfg"
    haproxy -c -q -f "${RUNDIR}/$t.cfg" >"${RUNDIR}/$t-c.log" 2>&1 ||
      die "haproxy -c ($t) failed: $(cat "${RUNDIR}/$t-c.log")"
    start "$t" "${LB_CPU}" haproxy -db -f "${RUNDIR}/$t.cfg"
    TPID[$t]=${LAST_PID}
    TPORT[$t]=${LISTEN_PORT}
    ;;
  apache)
    free_port; LISTEN_PORT=${PORT}
    render apache-backend.conf.tmpl "${RUNDIR}/apache-backend.conf"
    apache2 -t -d "${RUNDIR}" -f "${RUNDIR}/apache-backend.conf" >"${RUNDIR}/apache-t.log" 2>&1 ||
      die "apache2 -t failed: $(cat "${RUNDIR}/apache-t.log")"
    start apache "${LB_CPU}" apache2 -d "${RUNDIR}" -f "${RUNDIR}/apache-backend.conf" -DFOREGROUND
    TPID[apache]=${LAST_PID}
    TPORT[apache]=${LISTEN_PORT}
    ;;
  *) die "unknown target '$t' (BENCH_TARGETS)" ;;
  esac
  if [[ $t != direct && $t != gwelb ]]; then
    wait_http "$t" "${TPID[$t]}" "${TPORT[$t]}" "${REQ_PATH}" "${STICKY_COOKIE}"
  fi
}

# has_cookie NAME=VALUE: true if one of the Set-Cookie headers of the last
# http_get sets exactly NAME=VALUE (attributes after ';' ignored).
has_cookie() {
  local c rest=${H_SETCOOKIE}
  while [[ -n ${rest} ]]; do
    c=${rest%%" | "*}
    [[ ${rest} == *" | "* ]] && rest=${rest#*" | "} || rest=""
    c=${c%%;*}
    c=${c// /}
    [[ ${c} == "$1" ]] && return 0
  done
  return 1
}

# verify_target T: sticky cookies must reach their server; new sessions must
# get a ROUTEID cookie naming the server that answered, round-robin.
verify_target() {
  local t=$1 port=${TPORT[$1]} r i seen="" want
  if [[ $t == direct ]]; then
    http_get "${port}" "${REQ_PATH}" "${STICKY_COOKIE}" || die "direct: no answer on ${port}"
    [[ ${H_STATUS} == 200 && ${H_SERVER} == 2 && ${H_BODY} == 2 ]] ||
      die "direct: want 200 from server 2, got status=${H_STATUS} X-GWE-Server=${H_SERVER} body=${H_BODY}"
    http_get "${port}" "${ALIAS_PATH}" || die "direct: no answer on ${port}"
    [[ ${H_STATUS} == 200 && ${H_SERVER} == 2 ]] ||
      die "direct: want 200 from server 2 for ${ALIAS_PATH}, got status=${H_STATUS} X-GWE-Server=${H_SERVER}"
    log "verify direct: server 2 answers ${REQ_PATH} and ${ALIAS_PATH} (X-GWE-Server: 2)"
    return 0
  fi
  for r in 2 1 3 2; do
    for i in 1 2 3; do
      http_get "${port}" "${ALIAS_PATH%.2}.${r}" || die "$t: no answer on ${port}"
      if [[ ${H_STATUS} != 200 || ${H_SERVER} != "${r}" ]]; then
        die "$t does NOT route '${ALIAS_PATH%.2}.${r}' to server ${r}: status=${H_STATUS} X-GWE-Server='${H_SERVER}' (request ${i})"
      fi
    done
  done
  for r in 2 1 3 2; do
    for i in 1 2 3; do
      http_get "${port}" "${REQ_PATH}" "ROUTEID=.${r}" || die "$t: no answer on ${port}"
      if [[ ${H_STATUS} != 200 || ${H_SERVER} != "${r}" || ${H_BODY} != "${r}" ]]; then
        die "$t does NOT route 'Cookie: ROUTEID=.${r}' to server ${r}: status=${H_STATUS} X-GWE-Server='${H_SERVER}' body='${H_BODY}' (request ${i})"
      fi
    done
  done
  for i in 1 2 3 4 5 6; do
    http_get "${port}" "${REQ_PATH}" || die "$t: no answer on ${port}"
    [[ ${H_STATUS} == 200 && -n ${H_SERVER} ]] ||
      die "$t: new session: status=${H_STATUS} X-GWE-Server='${H_SERVER}'"
    want="ROUTEID=.${H_SERVER}"
    has_cookie "${want}" ||
      die "$t: new session answered by server ${H_SERVER} but Set-Cookie is '${H_SETCOOKIE}' (want ${want})"
    [[ " ${seen} " == *" ${H_SERVER} "* ]] || seen+=" ${H_SERVER}"
  done
  (($(wc -w <<<"${seen}") >= 2)) || die "$t: 6 new sessions all went to server${seen} (no balancing)"
  log "verify $t: ROUTEID=.1/.2/.3 and alias=.1/.2/.3 -> servers 1/2/3; new sessions -> servers${seen} with matching Set-Cookie"
}

# ------------------------------------------------------------------- wrk ----

# parse_wrk FILE -> "rps p50_ms p99_ms non2xx socket_errors requests"
parse_wrk() {
  awk '
    function ms(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000
      if (u == "ms") return n
      if (u == "s") return n * 1000
      if (u == "m") return n * 60000
      return -1
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); serr = $4 + $6 + $8 + $10 }
    / requests in / { reqs = $1 }
    END {
      if (rps == "" || p50 == "" || p99 == "") exit 1
      printf "%s %.3f %.3f %d %d %d\n", rps, p50, p99, non2xx, serr, reqs
    }' "$1"
}

# Per-round values, space-separated, keyed "target,scenario".
declare -A RPS_R=() P50_R=() P99_R=() CPU_R=() CLIENT_R=() CLIENTUS_R=() SLEEPS_R=()
# Final values (medians over rounds; errors and requests summed).
declare -A RPS=() P50=() P99=() ERRS=() REQS=() CPU=() CLIENT=() CLIENTUS=() SLEEPS=()

# scenario_request S: sets SREQ_PATH and SREQ_COOKIE, the request wrk
# repeats in scenario S (with or without -cap), and SCHECK_PATH and
# SCHECK_COOKIE, the sticky request that must still reach server 2 after
# the run.
scenario_request() {
  SREQ_PATH=${REQ_PATH} SREQ_COOKIE="" SCHECK_PATH=${REQ_PATH} SCHECK_COOKIE=${STICKY_COOKIE}
  case ${1%-cap} in
  sticky) SREQ_COOKIE=${STICKY_COOKIE} ;;
  alias) SREQ_PATH=${ALIAS_PATH} SCHECK_PATH=${ALIAS_PATH} SCHECK_COOKIE="" ;;
  esac
}

bench() { # bench TARGET SCENARIO ROUND
  local t=$1 s=$2 round=$3 url hdr=() raw parsed rps p50 p99 non2xx serr reqs
  scenario_request "$s"
  url="http://127.0.0.1:${TPORT[$t]}${SREQ_PATH}"
  [[ -n ${SREQ_COOKIE} ]] && hdr=(-H "Cookie: ${SREQ_COOKIE}")
  raw="${OUT_DIR}/raw/${t}-${s}-r${round}.txt"
  local wpin=()
  [[ ${PIN} == 1 ]] && wpin=(taskset -c "${WRK_CPU}")
  log "round ${round}/${ROUNDS} ${t}/${s}: wrk warm-up ${WARMUP}, then -t${THREADS} -c${CONNECTIONS} -d${DURATION} --latency ${hdr[*]} ${url}"
  check_alive "before ${t}/${s}"
  [[ $s == *-cap ]] && cap_set "$t" on
  "${wpin[@]}" wrk -t"${THREADS}" -c"${CONNECTIONS}" -d"${WARMUP}" "${hdr[@]}" "${url}" >/dev/null ||
    die "wrk warm-up failed for ${t}/${s}"
  local ticks0="" sleeps0="" client0="" client1=""
  [[ -n ${TPID[$t]-} ]] && ticks0=$(cpu_ticks "${TPID[$t]}") && sleeps0=$(proc_sum "${TPID[$t]}" sleeps)
  [[ ${PIN} == 1 ]] && client0=$(cpu_line "${WRK_CPU}")
  "${wpin[@]}" wrk -t"${THREADS}" -c"${CONNECTIONS}" -d"${DURATION}" --latency "${hdr[@]}" "${url}" >"${raw}" ||
    die "wrk failed for ${t}/${s}"
  [[ -n ${client0} ]] && client1=$(cpu_line "${WRK_CPU}")
  local ticks1="" sleeps1=""
  [[ -n ${ticks0} ]] && ticks1=$(cpu_ticks "${TPID[$t]}") && sleeps1=$(proc_sum "${TPID[$t]}" sleeps)
  [[ $s == *-cap ]] && cap_set "$t" off
  if [[ -n ${client0} && -n ${client1} ]]; then
    CLIENT_R[$t,$s]+="${CLIENT_R[$t,$s]:+ }$(busy_pct "${client0}" "${client1}")"
  fi
  check_alive "after ${t}/${s}"
  parsed=$(parse_wrk "${raw}") || die "cannot parse wrk output ${raw}: $(cat "${raw}")"
  read -r rps p50 p99 non2xx serr reqs <<<"${parsed}"
  RPS_R[$t,$s]+="${RPS_R[$t,$s]:+ }${rps}"
  if [[ -n ${ticks1} ]] && ((reqs > 0)); then
    CPU_R[$t,$s]+="${CPU_R[$t,$s]:+ }$(awk -v d=$((ticks1 - ticks0)) -v hz="${CLK_TCK}" -v n="${reqs}" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')"
    SLEEPS_R[$t,$s]+="${SLEEPS_R[$t,$s]:+ }$(awk -v d=$((sleeps1 - sleeps0)) -v n="${reqs}" 'BEGIN { printf "%.2f", d / n }')"
  fi
  if [[ -n ${client0} && -n ${client1} ]] && ((reqs > 0)); then
    CLIENTUS_R[$t,$s]+="${CLIENTUS_R[$t,$s]:+ }$(awk -v a="${client0}" -v b="${client1}" -v hz="${CLK_TCK}" -v n="${reqs}" \
      'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.1f", (y[1] - x[1]) * 1e6 / hz / n }')"
  fi
  P50_R[$t,$s]+="${P50_R[$t,$s]:+ }${p50}"
  P99_R[$t,$s]+="${P99_R[$t,$s]:+ }${p99}"
  REQS[$t,$s]=$((${REQS[$t,$s]:-0} + reqs))
  ERRS[$t,$s]=$((${ERRS[$t,$s]:-0} + non2xx + serr))
  if ((non2xx + serr > 0)); then
    log "WARNING: ${t}/${s}: ${non2xx} non-2xx responses and ${serr} socket errors (see ${raw})"
  fi
  # Cheap post-check that the balancer still routes correctly after the load.
  if [[ $t != direct ]]; then
    if ! http_get "${TPORT[$t]}" "${SCHECK_PATH}" "${SCHECK_COOKIE}" || [[ ${H_SERVER} != 2 ]]; then
      die "${t}: after the run, ${SCHECK_PATH} ${SCHECK_COOKIE} no longer reaches server 2 (status='${H_STATUS}' X-GWE-Server='${H_SERVER}' body='${H_BODY}')"
    fi
  fi
}

# cpu_line N: "busy total" clock ticks of CPU N so far (/proc/stat), and
# busy_pct A B: the busy percentage between two of them. The client CPU's
# (wrk and the servers) says what bounded a run: near 100%, the client
# side did, and every balancer that keeps up comes out near 1.0x of the
# others, whatever its own cost (CPU us/req).
cpu_line() {
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat
}
busy_pct() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
    if (t <= 0) print "-"; else printf "%.0f\n", 100 * (y[1] - x[1]) / t }'
}

# proc_sum PID FIELD: FIELD summed over PID and its descendants (nginx and
# Apache work in child processes) from /proc, where FIELD is
#   ticks     CPU time (user + system, clock ticks): the balancer's own
#             cost per request, whichever CPU is the bound;
#   sleeps    voluntary context switches of every thread: how often the
#             balancer ran out of work and waited for the network. Each
#             such wait ends with a wakeup, and a wakeup from the other CPU
#             (a client's request, a server's answer) is paid partly by the
#             CPU that sends it, here the client CPU (see bench).
# A child that exits during a run takes its counts with it (Apache may
# retire workers).
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
proc_sum() {
  local p total=0 pids=("$1") i=0 what=$2
  while ((i < ${#pids[@]})); do
    p=${pids[i]}
    ((i++)) || true
    [[ -r /proc/${p}/stat ]] || continue
    if [[ ${what} == ticks ]]; then
      total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/${p}/stat")))
    else
      total=$((total + $(cat "/proc/${p}"/task/*/status 2>/dev/null | awk '$1 == "voluntary_ctxt_switches:" { n += $2 } END { print n + 0 }')))
    fi
    if command -v pgrep >/dev/null 2>&1; then
      # shellcheck disable=SC2207
      pids+=($(pgrep -P "${p}" || true))
    fi
  done
  echo "${total}"
}
cpu_ticks() { proc_sum "$1" ticks; }

# cpu_busy_pct: percentage of all CPUs' time spent busy over the next 2s
# (from /proc/stat; "unknown" without it). Everything started by this script
# is idle then, so this is other load on the machine.
cpu_busy_pct() {
  local a b
  a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat 2>/dev/null) || a=""
  sleep 2
  b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat 2>/dev/null) || b=""
  if [[ -z $a || -z $b ]]; then echo unknown; return; fi
  awk -v a="$a" -v b="$b" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    busy = y[1] - x[1]; total = busy + y[2] - x[2]
    if (total <= 0) print "unknown"; else printf "%.0f\n", 100 * busy / total }'
}

median() { # median of the (space-separated) numbers in $1
  tr ' ' '\n' <<<"$1" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { # ratio A B -> A/B with 2 decimals, or "-"
  if [[ -z ${1} || -z ${2} ]]; then printf -- '-'; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) printf "-"; else printf "%.2f", a / b }'
}

# pratio A B: the median of the per-round ratios A[i]/B[i] of two lists of
# rounds (space-separated), 2 decimals, or "-". A round measures the
# targets one right after the other, so its ratio cancels the machine's
# own swings, which a ratio of medians taken from different rounds keeps:
# a shared VM ran 35% slower for a minute at a time on 2026-12-03, and a
# 3-round make bench then put one target's median in a slow round and the
# other's in a fast one. Lists of different lengths (a failed sample):
# the ratio of their medians.
pratio() {
  if [[ -z ${1-} || -z ${2-} ]]; then printf -- '-'; return; fi
  local -a a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  if ((${#a[@]} != ${#b[@]})); then
    ratio "$(median "$1")" "$(median "$2")"
    return
  fi
  local rs="" i
  for i in "${!a[@]}"; do
    awk -v y="${b[i]}" 'BEGIN { exit !(y + 0 > 0) }' || { printf -- '-'; return; }
    rs+="${rs:+ }$(awk -v x="${a[i]}" -v y="${b[i]}" 'BEGIN { printf "%.6f", x / y }')"
  done
  awk -v m="$(median "${rs}")" 'BEGIN { printf "%.2f", m }'
}

numeric() { # numeric V [ELSE]: V if it is a number, else ELSE (default "")
  if [[ ${1-} =~ ^[0-9]+(\.[0-9]+)?$ ]]; then printf '%s' "$1"; else printf '%s' "${2-}"; fi
}

json_str() { # minimal JSON string escaping
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/ }
  s=${s//$'\n'/ }
  printf '"%s"' "${s}"
}

version_of() {
  case $1 in
  direct) printf 'gwe-demo %s' "$(git -C "${REPO_ROOT}" describe --always --dirty 2>/dev/null || echo unknown)" ;;
  gwelb) printf 'gwelb %s' "$(git -C "${REPO_ROOT}" describe --always --dirty 2>/dev/null || echo unknown)" ;;
  nginx) nginx -v 2>&1 | head -n1 ;;
  haproxy | haproxy-min) haproxy -v 2>&1 | head -n1 | awk '{print $1, $2, $3}' ;;
  apache) apache2 -v 2>&1 | head -n1 | sed 's/^Server version: //' ;;
  esac
}

# ------------------------------------------------------------------ main ----

ensure_tools
build_bins

NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
PIN=0
LB_CPU="" WRK_CPU="" DEMO_CPU=""
if [[ ${BENCH_NO_PIN:-0} != 1 ]] && ((NCPU >= 2)) && command -v taskset >/dev/null 2>&1; then
  PIN=1 LB_CPU=1 WRK_CPU=0 DEMO_CPU=0
  PIN_NOTE="balancers pinned to CPU 1; wrk and the 3 demo servers pinned to CPU 0 (taskset)"
else
  PIN_NOTE="no CPU pinning (ncpu=${NCPU}, taskset $(command -v taskset >/dev/null 2>&1 && echo present || echo missing), BENCH_NO_PIN=${BENCH_NO_PIN:-0})"
fi
BUDGET_NOTE="nginx worker_processes 1; haproxy nbthread 1; gwelb GOMAXPROCS=1; apache mpm_event defaults"

if ((EUID == 0)) && getent passwd www-data >/dev/null 2>&1; then
  APACHE_USER_LINE="User www-data" APACHE_GROUP_LINE="Group www-data"
else
  APACHE_USER_LINE="# (not root: no User)" APACHE_GROUP_LINE="# (not root: no Group)"
fi
LISTEN_PORT="" OPS_PORT="" RAFT_PORT="" GOSSIP_PORT="" GRPC_PORT=""

RUNDIR=$(mktemp -d "${TMPDIR:-/tmp}/gwelb-bench.XXXXXX")
chmod 755 "${RUNDIR}" # apache children (www-data) may need to traverse it
rm -rf "${OUT_DIR}"
mkdir -p "${OUT_DIR}/raw" "${OUT_DIR}/configs"

log "${PIN_NOTE}"
log "CPU budget: ${BUDGET_NOTE}"

# Three demo GWE backend servers, routes/names 1 2 3.
declare -a B_PORT=() DEMO_PID=()
for r in 1 2 3; do
  free_port
  B_PORT[r]=${PORT}
  start "gwe-demo-${r}" "${DEMO_CPU}" "${GWE_DEMO_BIN}" -no-echo -addr "127.0.0.1:${PORT}" -name "${r}" -prefix /backend
  DEMO_PID[r]=${LAST_PID}
done
for r in 1 2 3; do
  wait_http "gwe-demo-${r}" "${DEMO_PID[r]}" "${B_PORT[r]}" "${REQ_PATH}"
  http_get "${B_PORT[r]}" "${REQ_PATH}"
  [[ ${H_SERVER} == "${r}" ]] || die "gwe-demo-${r} answers X-GWE-Server='${H_SERVER}', want '${r}'"
done
log "demo servers: 1=127.0.0.1:${B_PORT[1]} 2=127.0.0.1:${B_PORT[2]} 3=127.0.0.1:${B_PORT[3]}"

read -r -a TARGET_LIST <<<"${TARGETS}"
read -r -a SCENARIO_LIST <<<"${SCENARIOS}"
for s in "${SCENARIO_LIST[@]}"; do
  [[ $s =~ ^(sticky|alias|new)(-cap)?$ ]] || die "unknown scenario '$s' (BENCH_SCENARIOS: sticky alias new sticky-cap alias-cap new-cap)"
done
if [[ " ${SCENARIOS} " == *"-cap "* ]]; then
  cap_init
  log "${CAP_NOTE}"
  if [[ -z ${CG_VERSION} ]]; then
    kept=()
    for s in "${SCENARIO_LIST[@]}"; do [[ $s == *-cap ]] || kept+=("$s"); done
    SCENARIO_LIST=("${kept[@]}")
  fi
fi
# measured T S: whether target T runs in scenario S (no balancer to cap for direct).
measured() { [[ $2 != *-cap || $1 != direct ]]; }

# Start and verify everything before measuring anything.
for t in "${TARGET_LIST[@]}"; do
  start_target "$t"
  cap_join "$t"
done
for t in "${TARGET_LIST[@]}"; do verify_target "$t"; done

[[ ${ROUNDS} =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
IDLE_BUSY=$(cpu_busy_pct)
log "before measuring: CPU ${IDLE_BUSY}% busy over 2s with everything idle; load average ${LOADAVG_START}"
# Even rounds run the targets in reverse order, so no target always runs
# right after the same neighbour.
REVERSED=()
for ((i = ${#TARGET_LIST[@]} - 1; i >= 0; i--)); do REVERSED+=("${TARGET_LIST[i]}"); done
for ((round = 1; round <= ROUNDS; round++)); do
  for s in "${SCENARIO_LIST[@]}"; do
    if ((round % 2)); then order=("${TARGET_LIST[@]}"); else order=("${REVERSED[@]}"); fi
    for t in "${order[@]}"; do
      if measured "$t" "$s"; then bench "$t" "$s" "${round}"; fi
    done
  done
done
# The second table (deploy/bench/streams): big bodies, WebSockets, idle
# connections, through every target. Body and WebSocket runs repeat for
# BENCH_ROUNDS rounds, the target order reversed every other round as for
# wrk, and report medians: a single 16 MiB sample swings 650-1,750 MB/s on
# a shared 2-core machine. Idle connections are measured once (memory).
# Beside each rate, the balancer's own CPU per unit of work, as CPU us/req
# is for wrk: the rates are bound by the client CPU (the streams tool and
# the servers), so this is where the balancers' costs differ.
STREAMS=${BENCH_STREAMS:-1} IDLE_CONNS=${BENCH_IDLE_CONNS:-500}
declare -A UP=() DOWN=() WS=() IDLEK=() UP_R=() DOWN_R=() WS_R=()
declare -A UPC=() DOWNC=() WSC=() UPC_R=() DOWNC_R=() WSC_R=() SCLIENT_R=() SCLIENT=()
add_sample() { # add_sample ARRAY TARGET VALUE: append VALUE to ARRAY[TARGET] if it is a number
  local -n arr=$1
  local v
  v=$(numeric "$3")
  [[ -n $v ]] && arr[$2]="${arr[$2]:+${arr[$2]} }$v"
  return 0
}
# stream_run TARGET MODE [KEY] (MODE up, down or ws): one streams measurement;
# its rate goes to UP_R/DOWN_R/WS_R[KEY], the balancer's CPU per GB (bodies,
# ms) or per message (ws, us) to UPC_R/DOWNC_R/WSC_R[KEY], the client CPU's
# busy % to SCLIENT_R[KEY,MODE]. KEY is TARGET, or TARGET-cap for a run
# with the balancer's CPU quota on.
stream_run() {
  local t=$1 mode=$2 k=${3:-$1} line kv rate="" work="" ticks0="" ticks1="" client0="" client1=""
  [[ -n ${TPID[$t]-} ]] && ticks0=$(cpu_ticks "${TPID[$t]}")
  [[ ${PIN} == 1 ]] && client0=$(cpu_line "${WRK_CPU}")
  line=$("${spin[@]}" "${RUNDIR}/streams" -mode "${mode}" -url "${url}" -cookie "${STICKY_COOKIE}" 2>>"${RUNDIR}/streams.log") || line=""
  [[ -n ${client0} ]] && client1=$(cpu_line "${WRK_CPU}")
  [[ -n ${ticks0} ]] && ticks1=$(cpu_ticks "${TPID[$t]}")
  for kv in ${line}; do
    case ${kv} in
      *_mbps=* | ws_msgs=*) rate=${kv#*=} ;;
      *_bytes=* | ws_n=*) work=${kv#*=} ;;
    esac
  done
  local upper=${mode^^}
  add_sample "${upper}_R" "$k" "${rate}"
  if [[ -n $(numeric "${rate}") && -n ${ticks1} && ${work} =~ ^[1-9][0-9]*$ ]]; then
    add_sample "${upper}C_R" "$k" "$(awk -v d=$((ticks1 - ticks0)) -v hz="${CLK_TCK}" -v n="${work}" -v m="${mode}" \
      'BEGIN { if (m == "ws") printf "%.1f", d * 1e6 / hz / n; else printf "%.0f", d * 1e3 / hz / (n / 1e9) }')"
  fi
  if [[ -n ${client0} && -n ${client1} ]]; then
    SCLIENT_R[$k,$mode]+="${SCLIENT_R[$k,$mode]:+ }$(busy_pct "${client0}" "${client1}")"
  fi
}
# rival KEY: the streams row KEY is compared with: haproxy, or haproxy-cap
# for a capped row.
rival() { if [[ $1 == *-cap ]]; then echo haproxy-cap; else echo haproxy; fi; }
# The streams table's rows: every target but haproxy-min (see the streams
# loop), then each balancer again with its CPU quota on (TARGET-cap) when
# the -cap scenarios run.
STREAM_KEYS=()
for t in "${TARGET_LIST[@]}"; do
  if [[ $t != haproxy-min ]]; then STREAM_KEYS+=("$t"); fi
done
if [[ " ${SCENARIO_LIST[*]} " == *"-cap "* ]]; then
  for t in "${TARGET_LIST[@]}"; do
    if [[ $t != haproxy-min && $t != direct ]]; then STREAM_KEYS+=("$t-cap"); fi
  done
fi
if [[ ${STREAMS} == 1 ]]; then
  go build -o "${RUNDIR}/streams" ./deploy/bench/streams >&2 || die "go build ./deploy/bench/streams failed (or BENCH_STREAMS=0)"
  spin=()
  [[ ${PIN} == 1 ]] && spin=(taskset -c "${WRK_CPU}")
  for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order=("${TARGET_LIST[@]}"); else order=("${REVERSED[@]}"); fi
    for t in "${order[@]}"; do
      # haproxy-min differs from haproxy only in the headers of a request
      # head: nothing for 16 MiB bodies or WebSocket frames to tell apart.
      [[ $t == haproxy-min ]] && continue
      url="http://127.0.0.1:${TPORT[$t]}"
      log "streams round ${round}/${ROUNDS} ${t}: 16 MiB bodies both ways, WebSocket echo$([[ $t != direct && ${round} == 1 ]] && echo ", ${IDLE_CONNS} idle connections")"
      for mode in up down ws; do stream_run "$t" "${mode}"; done
      if [[ " ${STREAM_KEYS[*]} " == *" $t-cap "* ]]; then
        cap_set "$t" on
        for mode in up down ws; do stream_run "$t" "${mode}" "$t-cap"; done
        cap_set "$t" off
      fi
      if [[ $t != direct && ${round} == 1 ]]; then
        line=$("${spin[@]}" "${RUNDIR}/streams" -mode idle -url "${url}" -cookie "${STICKY_COOKIE}" \
          -pid "${TPID[$t]}" -conns "${IDLE_CONNS}" 2>>"${RUNDIR}/streams.log") || line=""
        IDLEK[$t]=${line#idle_kib=}
      fi
      check_alive "after streams ${t}"
    done
  done
  whole() { printf '%.0f' "$1"; }
  for t in "${STREAM_KEYS[@]}"; do
    [[ -n ${UP_R[$t]-} ]] && UP[$t]=$(whole "$(median "${UP_R[$t]}")")
    [[ -n ${DOWN_R[$t]-} ]] && DOWN[$t]=$(whole "$(median "${DOWN_R[$t]}")")
    [[ -n ${WS_R[$t]-} ]] && WS[$t]=$(whole "$(median "${WS_R[$t]}")")
    [[ -n ${UPC_R[$t]-} ]] && UPC[$t]=$(whole "$(median "${UPC_R[$t]}")")
    [[ -n ${DOWNC_R[$t]-} ]] && DOWNC[$t]=$(whole "$(median "${DOWNC_R[$t]}")")
    [[ -n ${WSC_R[$t]-} ]] && WSC[$t]=$(printf '%.1f' "$(median "${WSC_R[$t]}")")
    for mode in up down ws; do
      [[ -n ${SCLIENT_R[$t,$mode]-} ]] && SCLIENT[$t,$mode]=$(whole "$(median "${SCLIENT_R[$t,$mode]}")")
    done
  done
fi
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
IDLE_BUSY_END=$(cpu_busy_pct)
for s in "${SCENARIO_LIST[@]}"; do
  for t in "${TARGET_LIST[@]}"; do
    measured "$t" "$s" || continue
    RPS[$t,$s]=$(median "${RPS_R[$t,$s]}")
    P50[$t,$s]=$(median "${P50_R[$t,$s]}")
    P99[$t,$s]=$(median "${P99_R[$t,$s]}")
    [[ -n ${CPU_R[$t,$s]-} ]] && CPU[$t,$s]=$(median "${CPU_R[$t,$s]}")
    [[ -n ${CLIENT_R[$t,$s]-} ]] && CLIENT[$t,$s]=$(median "${CLIENT_R[$t,$s]}")
    [[ -n ${CLIENTUS_R[$t,$s]-} ]] && CLIENTUS[$t,$s]=$(median "${CLIENTUS_R[$t,$s]}")
    [[ -n ${SLEEPS_R[$t,$s]-} ]] && SLEEPS[$t,$s]=$(median "${SLEEPS_R[$t,$s]}")
  done
done

# ---------------------------------------------------------------- report ----

{
  printf '# gwelb benchmark: wrk -t%s -c%s -d%s --latency %s (warm-up %s), %s round(s)%s\n' \
    "${THREADS}" "${CONNECTIONS}" "${DURATION}" "${REQ_PATH}" "${WARMUP}" "${ROUNDS}" \
    "$( ((ROUNDS > 1)) && echo ', medians shown')"
  printf '# sticky = every request sends "Cookie: %s" (must reach server 2); alias = every request is GET %s\n' "${STICKY_COOKIE}" "${ALIAS_PATH}"
  printf '# (the Frontend pool: must reach server 2); new = no cookie (new session, round-robin)\n'
  printf '# %s\n# %s; %s CPUs\n' "${PIN_NOTE}" "${BUDGET_NOTE}" "${NCPU}"
  [[ -n ${CAP_NOTE} ]] && printf '# %s\n' "${CAP_NOTE}"
  printf '# other load: CPUs %s%% busy just before and %s%% just after measuring (bench idle); load average %s before, %s after\n\n' \
    "${IDLE_BUSY}" "${IDLE_BUSY_END}" "${LOADAVG_START}" "${LOADAVG_END}"
  if [[ ${IDLE_BUSY} =~ ^[0-9]+$ && ${IDLE_BUSY_END} =~ ^[0-9]+$ ]] && ((IDLE_BUSY > 10 || IDLE_BUSY_END > 10)); then
    printf '# WARNING: other processes kept the CPUs busy (%s%% before, %s%% after measuring): numbers are noisy;\n' \
      "${IDLE_BUSY}" "${IDLE_BUSY_END}"
    printf '#          see rps_rounds in results.json; rerun on a quiet machine or with BENCH_ROUNDS=5\n\n'
  fi
  printf '| %-11s | %-10s | %10s | %8s | %8s | %7s | %9s | %8s | %10s | %14s | %14s | %10s | %14s | %10s | %13s | %10s |\n' \
    target scenario 'req/s' 'p50 ms' 'p99 ms' errors 'x direct' 'x nginx' 'x haproxy' 'p99 x haproxy' 'x haproxy-min' \
    'CPU us/req' 'CPU x haproxy' 'client CPU' 'client us/req' 'sleeps/req'
  printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' '-------------' '------------' '-----------:' '---------:' \
    '---------:' '--------:' '----------:' '---------:' '-----------:' '---------------:' '---------------:' \
    '-----------:' '---------------:' '-----------:' '--------------:' '-----------:'
  for s in "${SCENARIO_LIST[@]}"; do
    for t in "${TARGET_LIST[@]}"; do
      measured "$t" "$s" || continue
      printf '| %-11s | %-10s | %10.0f | %8.3f | %8.3f | %7s | %9s | %8s | %10s | %14s | %14s | %10s | %14s | %10s | %13s | %10s |\n' \
        "$t" "$s" "${RPS[$t,$s]}" "${P50[$t,$s]}" "${P99[$t,$s]}" "${ERRS[$t,$s]}" \
        "$(pratio "${RPS_R[$t,$s]}" "${RPS_R[direct,$s]-}")" "$(pratio "${RPS_R[$t,$s]}" "${RPS_R[nginx,$s]-}")" \
        "$(pratio "${RPS_R[$t,$s]}" "${RPS_R[haproxy,$s]-}")" "$(pratio "${P99_R[$t,$s]}" "${P99_R[haproxy,$s]-}")" \
        "$(pratio "${RPS_R[$t,$s]}" "${RPS_R[haproxy-min,$s]-}")" \
        "${CPU[$t,$s]:--}" "$(pratio "${CPU_R[$t,$s]-}" "${CPU_R[haproxy,$s]-}")" "$(if [[ -n ${CLIENT[$t,$s]-} ]]; then echo "${CLIENT[$t,$s]}%"; else echo -; fi)" \
        "${CLIENTUS[$t,$s]:--}" "${SLEEPS[$t,$s]:--}"
    done
  done
  printf '\nx direct / x nginx / x haproxy / x haproxy-min = req/s of the row divided by req/s of that target in the\n'
  printf 'same scenario and round, median over rounds (new = new sessions: the balancer inserts the route cookie);\n'
  printf 'p99 x haproxy below 1 is better.\n'
  printf 'haproxy forwards the cookie and X-Forwarded-For/-Host/-Proto as gwelb does; haproxy-min forwards neither,\n'
  printf 'so its servers (on the CPU wrk shares) parse fewer headers per request.\n'
  printf 'CPU us/req = CPU time (user + system) of the balancer and its child processes over the measured run,\n'
  printf 'divided by the requests served: its own cost per request, which decides its req/s on a machine where\n'
  printf 'the balancer, not wrk and the servers (CPU 0 here), runs out of CPU; CPU x haproxy below 1 is cheaper.\n'
  if [[ " ${SCENARIO_LIST[*]} " == *"-cap "* ]]; then
    printf -- '-cap = the same scenario with every balancer held to %s%% of one CPU (cgroup quota, %s ms periods):\n' "${CAP}" "$((CAP_PERIOD_US / 1000))"
    printf 'there the balancer runs out first (client CPU below 100%%), and req/s follows its CPU per request;\n'
    printf 'its latencies include the pauses of a throttled balancer (up to the rest of a period).\n'
  fi
  if [[ ${PIN} == 1 ]]; then
    printf 'client CPU = how busy CPU %s (wrk and the servers) was during the run: near 100%%, the client side bounded\n' "${WRK_CPU}"
    printf 'req/s, and balancers that keep up come out near 1.0x of each other whatever their own CPU us/req.\n'
    printf 'client us/req = busy time of CPU %s divided by the requests: there, what bounds req/s. sleeps/req =\n' "${WRK_CPU}"
    printf 'the times the balancer waited for the network (voluntary context switches) per request; each wait ends\n'
    printf 'in a wakeup from the other CPU, partly paid by CPU %s, so a balancer that waits more often costs it more.\n' "${WRK_CPU}"
  fi
  if [[ ${STREAMS} == 1 ]]; then
    printf '\n| %-11s | %14s | %16s | %9s | %13s | %12s | %14s | %12s |\n' \
      target '16 MiB up MB/s' '16 MiB down MB/s' 'ws msg/s' 'idle KiB/conn' 'up x haproxy' 'down x haproxy' 'ws x haproxy'
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' '-------------' '---------------:' '-----------------:' '----------:' \
      '--------------:' '-------------:' '---------------:' '-------------:'
    for t in "${STREAM_KEYS[@]}"; do
      h=$(rival "$t")
      printf '| %-11s | %14s | %16s | %9s | %13s | %12s | %14s | %12s |\n' "$t" \
        "${UP[$t]:--}" "${DOWN[$t]:--}" "${WS[$t]:--}" "${IDLEK[$t]:--}" \
        "$(pratio "${UP_R[$t]-}" "${UP_R[$h]-}")" \
        "$(pratio "${DOWN_R[$t]-}" "${DOWN_R[$h]-}")" \
        "$(pratio "${WS_R[$t]-}" "${WS_R[$h]-}")"
    done
    printf '\nup = POST 16 MiB to /backend/echo, which streams it back at once (MB/s each way); down = GET 16 MiB;\n'
    printf 'ws = 64-byte messages echoed over 8 WebSockets; idle = the balancer RSS growth per idle keep-alive\n'
    printf 'connection (%s connections, child processes included); "-" = refused (e.g. nginx: 1 MiB body limit).\n' "${IDLE_CONNS}"
    if [[ " ${STREAM_KEYS[*]} " == *"-cap "* ]]; then
      printf 'TARGET-cap = the same runs with the balancer held to %s%% of one CPU (as the -cap scenarios), x haproxy-cap.\n' "${CAP}"
    fi
    printf '\n| %-11s | %12s | %14s | %12s | %14s | %16s | %14s | %17s |\n' \
      target 'up CPU ms/GB' 'down CPU ms/GB' 'ws CPU us/msg' 'up CPU x haproxy' 'down CPU x haproxy' 'ws CPU x haproxy' 'client CPU up/down/ws'
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' '-------------' '-------------:' '---------------:' '-------------:' \
      '---------------:' '-----------------:' '---------------:' '------------------:'
    for t in "${STREAM_KEYS[@]}"; do
      h=$(rival "$t")
      printf '| %-11s | %12s | %14s | %12s | %14s | %16s | %14s | %17s |\n' "$t" \
        "${UPC[$t]:--}" "${DOWNC[$t]:--}" "${WSC[$t]:--}" \
        "$(pratio "${UPC_R[$t]-}" "${UPC_R[$h]-}")" \
        "$(pratio "${DOWNC_R[$t]-}" "${DOWNC_R[$h]-}")" \
        "$(pratio "${WSC_R[$t]-}" "${WSC_R[$h]-}")" \
        "${SCLIENT[$t,up]:--}/${SCLIENT[$t,down]:--}/${SCLIENT[$t,ws]:--}%"
    done
    printf '\nCPU per GB (of the request body for up; the echo carries as much back) and per message = CPU time\n'
    printf '(user + system) of the balancer and its child processes over the measurement divided by the work;\n'
    printf 'CPU x haproxy below 1 is cheaper. client CPU = how busy CPU %s (the streams tool and the servers)\n' "${WRK_CPU:-0}"
    printf 'was: near 100%%, it bounded the rates above, as it bounds req/s.\n'
  fi
} | tee "${OUT_DIR}/results.md"

{
  printf '{\n'
  printf '  "generated_at": %s,\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
  printf '  "host": {"ncpu": %s, "cpu_model": %s, "kernel": %s, "other_cpu_busy_pct_before": %s, "other_cpu_busy_pct_after": %s, "loadavg_start": %s, "loadavg_end": %s},\n' "${NCPU}" \
    "$(json_str "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)")" \
    "$(json_str "$(uname -sr)")" "$([[ ${IDLE_BUSY} =~ ^[0-9]+$ ]] && echo "${IDLE_BUSY}" || echo null)" \
    "$([[ ${IDLE_BUSY_END} =~ ^[0-9]+$ ]] && echo "${IDLE_BUSY_END}" || echo null)" \
    "$(json_str "${LOADAVG_START}")" "$(json_str "${LOADAVG_END}")"
  printf '  "wrk": {"threads": %s, "connections": %s, "duration": %s, "warmup": %s, "rounds": %s, "path": %s, "sticky_cookie": %s, "alias_path": %s},\n' \
    "${THREADS}" "${CONNECTIONS}" "$(json_str "${DURATION}")" "$(json_str "${WARMUP}")" "${ROUNDS}" \
    "$(json_str "${REQ_PATH}")" "$(json_str "${STICKY_COOKIE}")" "$(json_str "${ALIAS_PATH}")"
  printf '  "cpu_pinning": {"enabled": %s, "balancers_cpu": %s, "wrk_cpu": %s, "demo_servers_cpu": %s, "note": %s, "budget": %s},\n' \
    "$([[ ${PIN} == 1 ]] && echo true || echo false)" "${LB_CPU:-null}" "${WRK_CPU:-null}" "${DEMO_CPU:-null}" \
    "$(json_str "${PIN_NOTE}")" "$(json_str "${BUDGET_NOTE}")"
  printf '  "cpu_cap": {"percent": %s, "period_us": %s, "cgroup": %s, "note": %s},\n' \
    "$([[ -n ${CG_VERSION} ]] && echo "${CAP}" || echo null)" "${CAP_PERIOD_US}" \
    "$([[ -n ${CG_VERSION} ]] && json_str "v${CG_VERSION}" || echo null)" "$(json_str "${CAP_NOTE}")"
  printf '  "versions": {'
  sep=""
  for t in "${TARGET_LIST[@]}"; do
    printf '%s%s: %s' "${sep}" "$(json_str "$t")" "$(json_str "$(version_of "$t")")"
    sep=", "
  done
  printf ', "wrk": %s},\n' "$(json_str "$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')")"
  printf '  "results": [\n'
  sep=""
  for s in "${SCENARIO_LIST[@]}"; do
    for t in "${TARGET_LIST[@]}"; do
      measured "$t" "$s" || continue
      printf '%s    {"target": %s, "scenario": %s, "requests": %s, "rps": %s, "p50_ms": %s, "p99_ms": %s, "errors": %s, "rps_vs_direct": %s, "rps_vs_nginx": %s, "p99_vs_nginx": %s, "rps_vs_haproxy": %s, "p99_vs_haproxy": %s, "rps_vs_haproxy_min": %s, "cpu_us_per_req": %s, "client_cpu_busy_pct": %s, "client_cpu_us_per_req": %s, "sleeps_per_req": %s, "rps_rounds": [%s]}' \
        "${sep}" "$(json_str "$t")" "$(json_str "$s")" "${REQS[$t,$s]}" "${RPS[$t,$s]}" "${P50[$t,$s]}" "${P99[$t,$s]}" "${ERRS[$t,$s]}" \
        "$(r=$(pratio "${RPS_R[$t,$s]}" "${RPS_R[direct,$s]-}"); [[ $r == - ]] && echo null || echo "$r")" \
        "$(r=$(pratio "${RPS_R[$t,$s]}" "${RPS_R[nginx,$s]-}"); [[ $r == - ]] && echo null || echo "$r")" \
        "$(r=$(pratio "${P99_R[$t,$s]}" "${P99_R[nginx,$s]-}"); [[ $r == - ]] && echo null || echo "$r")" \
        "$(r=$(pratio "${RPS_R[$t,$s]}" "${RPS_R[haproxy,$s]-}"); [[ $r == - ]] && echo null || echo "$r")" \
        "$(r=$(pratio "${P99_R[$t,$s]}" "${P99_R[haproxy,$s]-}"); [[ $r == - ]] && echo null || echo "$r")" \
        "$(r=$(pratio "${RPS_R[$t,$s]}" "${RPS_R[haproxy-min,$s]-}"); [[ $r == - ]] && echo null || echo "$r")" \
        "$(numeric "${CPU[$t,$s]-}" null)" "$(numeric "${CLIENT[$t,$s]-}" null)" \
        "$(numeric "${CLIENTUS[$t,$s]-}" null)" "$(numeric "${SLEEPS[$t,$s]-}" null)" \
        "$(tr ' ' ',' <<<"${RPS_R[$t,$s]}")"
      sep=$',\n'
    done
  done
  printf '\n  ],\n  "streams": ['
  sep=""
  for t in "${STREAM_KEYS[@]}"; do
    printf '%s\n    {"target": %s, "body_up_mbps": %s, "body_down_mbps": %s, "ws_msgs_per_s": %s, "idle_kib_per_conn": %s, "up_cpu_ms_per_gb": %s, "down_cpu_ms_per_gb": %s, "ws_cpu_us_per_msg": %s}' \
      "${sep}" "$(json_str "$t")" "$(numeric "${UP[$t]-}" null)" "$(numeric "${DOWN[$t]-}" null)" \
      "$(numeric "${WS[$t]-}" null)" "$(numeric "${IDLEK[$t]-}" null)" \
      "$(numeric "${UPC[$t]-}" null)" "$(numeric "${DOWNC[$t]-}" null)" "$(numeric "${WSC[$t]-}" null)"
    sep=","
  done
  printf '\n  ]\n}\n'
} >"${OUT_DIR}/results.json"

log "wrote ${OUT_DIR}/results.json and ${OUT_DIR}/results.md"
