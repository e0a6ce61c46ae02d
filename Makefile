# gwelb: sticky-session load balancer for Genesys Web Engagement clusters.
# `make demo` runs the demo, `make test` the whole fast suite.

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)

.PHONY: all build test lint fuzz bench bench-idle bench-cluster bench-scale demo clean proto image compose-test chaos chaos-long

all: build

## build: static binaries into bin/
build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...


## test: the whole fast suite, with the race detector; the proxy package
## again without it, as it is built to run: its raw system calls
## (proxy/rawsys_linux.go, which race builds replace) and its 0-allocation
## test (the race detector's sync.Pool drops items); a short fuzz run of
## every fuzz target (make fuzz FUZZTIME=short)
## A failing run ends with a summary of what failed (a hung package's
## running tests included): CI keeps only the end of a long log.
test:
	@log=$$(mktemp); trap 'rm -f "$$log" "$$log.rc"' EXIT; \
	echo "$(GO) test -race -count=1 ./..."; \
	{ $(GO) test -race -count=1 ./... 2>&1; echo $$? >"$$log.rc"; } | tee "$$log"; \
	rc=$$(cat "$$log.rc"); if [ "$$rc" != 0 ]; then \
		echo; echo "== make test: what failed =="; \
		grep -E -A4 '^(--- FAIL|FAIL|panic:|running tests:)' "$$log" | grep -v -E '^goroutine |^\s*$$' | head -60; \
		exit "$$rc"; \
	fi
	$(GO) test -count=1 ./proxy/
	$(MAKE) --no-print-directory fuzz FUZZTIME=short

# Every fuzz target as package:Target:N. N is the number of executions
# FUZZTIME=short (make test) gives it: a few seconds each on a 2-core
# machine, also one busy with other work. Go fuzzes one target per
# `go test` run, so the recipe runs them in turn. The short run starts from
# the seeds and testdata/fuzz in a throwaway cache: the inputs earlier runs
# kept in $GOCACHE/fuzz would otherwise be replayed first, and make test
# would slow down with every run.
FUZZ_TARGETS := \
	./proxy/:FuzzSticky:15000 \
	./proxy/:FuzzRequestHead:4000 \
	./proxy/:FuzzGuardFraming:20000 \
	./proxy/:FuzzHeadDifferential:20000 \
	./fsm/:FuzzApply:20000 \
	./fsm/:FuzzRestore:20000 \
	./cluster/:FuzzDecodeTableCache:10000 \
	./cmd/gwelb/:FuzzParseConfig:10000 \
	./internal/confimport/:FuzzImport:10000

## fuzz: every fuzz target in turn for FUZZTIME each: an execution count
## (default 200000x); short, each target's own count as make test runs it;
## or, at the keyboard only, a duration such as 5m. make test never passes a
## duration: Go 1.26's fuzz coordinator can fail a run bounded by time that
## found nothing ("context deadline exceeded", golang/go#75804, fixed in Go
## 1.27), while a run bounded by a count has no deadline to race. The short
## run uses one fuzzing process per target (-parallel=1), which holds up
## better on a busy machine; FUZZFLAGS adds go test flags to any run.
FUZZTIME  ?= 200000x
FUZZFLAGS ?=
fuzz:
	@set -e; cache=; \
	if [ "$(FUZZTIME)" = short ]; then \
		cache=$$(mktemp -d); trap 'rm -rf "$$cache"' EXIT; \
	fi; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$${rest#*:}; \
		ft=$(FUZZTIME); flags=; args=; \
		if [ -n "$$cache" ]; then ft=$${n}x; flags=-parallel=1; args="-args -test.fuzzcachedir=$$cache/$$name"; fi; \
		echo "$(GO) test -run=NONE -fuzz=^$$name\$$ -fuzztime=$$ft $$flags $(FUZZFLAGS) $$pkg $$args"; \
		$(GO) test -run=NONE -fuzz="^$$name\$$" -fuzztime=$$ft $$flags $(FUZZFLAGS) $$pkg $$args; \
	done

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## bench: the idle demo cluster's CPU, Go benchmarks, then gwelb side by side
## with nginx, HAProxy and Apache under wrk. Idle goes first, on a quiet
## machine: right after the load (thousands of sockets in TIME_WAIT, the
## other balancers' exits) it read 1.47% / 1.17-1.20% where the same build
## idled at 0.73-0.77% / 0.50-0.60% alone minutes later (2026-12-04).
bench: build
	deploy/bench/idle.sh
	$(GO) test -run=NONE -bench=. -benchmem ./proxy/ ./fsm/
	deploy/bench/run.sh

## bench-idle: CPU of the three-node demo cluster while idle, per node
bench-idle: build
	deploy/bench/idle.sh

## bench-cluster: control-plane figures over a real in-process three-node
## cluster: PutMember-to-every-proxy latency (200 writes), leader failover
## (10 kills), writes/s through the leader with 1 and 16 clients, detection of
## a dead GWE server at default probe settings (10 deaths), probe CPU for 1,000 members
bench-cluster:
	$(GO) test -run=NONE -bench='^BenchmarkPutMemberPropagation$$' -benchtime=200x ./cluster/
	$(GO) test -run=NONE -bench='^BenchmarkLeaderFailover$$' -benchtime=10x ./cluster/
	$(GO) test -run=NONE -bench='^BenchmarkWrites$$' -benchtime=3s ./cluster/
	$(GO) test -run=NONE -bench='^BenchmarkDetection$$' -benchtime=10x ./cluster/
	$(GO) test -run=NONE -bench='^BenchmarkProbeCPU1000$$' -benchtime=1x ./cluster/

## bench-scale: issue 13's scale figures over real processes in the secure
## posture on loopback (deploy/benchscale): 5 voters + 45 non-voters
## (member change visible on every node, idle CPU, probe rate, RSS, the
## leader SIGKILLed under sticky traffic), then a voter and a non-voter
## holding 10,000 members (RSS, snapshot save and restore); about 3 min
## after the build (4 on a busy machine).
## BENCHSCALE_FLAGS adds flags (go run ./deploy/benchscale -h)
BENCHSCALE_FLAGS ?=
bench-scale: build
	$(GO) run ./deploy/benchscale -bin bin $(BENCHSCALE_FLAGS)

## demo: demo GWE servers and gwelb on loopback; Ctrl-C stops everything
demo: build
	deploy/local/demo.sh

## image: the production image gwelb:dev and the demo GWE server image
## gwelb-demo:dev for the compose demo (FROM scratch, the static binaries of bin/)
IMAGE      ?= gwelb:dev
DEMO_IMAGE ?= gwelb-demo:dev
image: build
	docker build -f deploy/Dockerfile -t $(IMAGE) .
	docker build -f deploy/Dockerfile --target demo -t $(DEMO_IMAGE) .

## compose-test: the three-node docker-compose cluster end to end (kills the leader)
compose-test:
	$(GO) test -count=1 -v -run TestCompose ./deploy/

## chaos: fault-injection suite over real processes, short profile (about 3-5 min; SEED=N replays a run)
SEED  ?= 0
NODES ?= 3
chaos: build
	$(GO) run ./chaos -profile short -nodes $(NODES) -seed $(SEED) -out chaos/out/report.json

## chaos-long: the long profile (about 25-30 min, more leader kills; NODES=5 for five nodes)
chaos-long: build
	$(GO) run ./chaos -profile long -nodes $(NODES) -seed $(SEED) -out chaos/out/report-long.json

clean:
	rm -rf bin .demo

## proto: regenerate proto/gwelb/v1 with pinned generators (protoc from Debian)
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
proto:
	@command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	GOBIN=$(CURDIR)/bin/tools $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(CURDIR)/bin/tools $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(CURDIR)/bin/tools:$$PATH protoc -I proto \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/gwelb/v1/*.proto
