# cairn build, test and run targets. Every target works on a fresh machine
# that has Go; `.ci/run` installs the rest.

GO      ?= go
BIN     := bin
PKGS    := ./...
LDFLAGS := -s -w
DATA    ?= default.cairn

.PHONY: all build test test-compat test-short chaos bench fuzz run cluster docker docker-test vet fmt clean

all: build

## build: static binaries in bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## test: the whole suite with the race detector, then the compatibility suite
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 25m $(PKGS)
	$(MAKE) test-compat

## test-compat: etcd's own Go client and the JSON gateway against a 3-member
## cluster; a module of its own, so the root module never depends on etcd
test-compat:
	cd integration/compat && $(GO) test -race -count=1 ./...

## test-short: quick pass without the race detector
test-short:
	$(GO) test -short -count=1 $(PKGS)

## chaos: a long randomised chaos run (integration/chaos): faults from SEED
## (default: from the clock) for DURATION on a cluster of MEMBERS (3 or 5);
## prints a summary and, on failure, the folder with the history (under
## CHAOS_OUT, default the system's temp dir)
SEED      ?= 0
DURATION  ?= 5m
MEMBERS   ?= 3
CHAOS_OUT ?=
chaos:
	$(GO) test ./integration/chaos -run '^TestChaos$$' -count=1 -timeout 60m -v \
		-chaos.duration=$(DURATION) -chaos.seed=$(SEED) -chaos.members=$(MEMBERS) \
		$(if $(CHAOS_OUT),-chaos.out=$(CHAOS_OUT))

## bench: package benchmarks (see docs/performance.md for the side-by-side runs)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./wal/... ./mvcc/... ./raftnode/...

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime $(FUZZTIME) ./wal/

## run: a single member, client 127.0.0.1:2379, peer 127.0.0.1:2380, data in ./default.cairn
run: build
	./$(BIN)/cairn --data-dir $(DATA)

## cluster: a local 3-member cluster from the Procfile (data in .cluster/)
cluster: build
	mkdir -p .cluster
	./scripts/cluster.sh Procfile

## docker: the FROM-scratch image cairn:dev from the static binary
docker: build
	docker build -f deploy/Dockerfile -t cairn:dev .

## docker-test: the deployment test: a 3-member compose cluster
## (deploy/docker-compose.yml) partitioned and restarted with Docker's tools;
## it builds its own binary and image and removes everything it created
docker-test:
	CAIRN_DOCKER_TEST=1 $(GO) test -count=1 -v -timeout 10m -run TestComposeCluster ./integration/docker/

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -l -w .

clean:
	rm -rf $(BIN)

## proto: regenerate the Go code in api/ from its .proto files with pinned tools
# protoc comes from Debian (protobuf-compiler, with libprotobuf-dev for the
# well-known types); the plugins are built into bin/tools at fixed versions.
# The output is committed; `make proto` must reproduce it byte for byte.
PROTOC_VERSION             := 3.21.12
PROTOC_INCLUDE             ?= /usr/include
PROTOC_GEN_GO_VERSION      := v1.36.11
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTOC_GEN_GATEWAY_VERSION := v2.33.0
TOOLS                      := $(CURDIR)/$(BIN)/tools
PROTO_FILES                := mvccpb/kv.proto authpb/auth.proto etcdserverpb/rpc.proto cairnpb/entry.proto

.PHONY: proto tools
proto: tools
	find api \( -name '*.pb.go' -o -name '*.pb.gw.go' \) -delete
	cd api && protoc -I . -I third_party -I $(PROTOC_INCLUDE) \
		--plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go \
		--plugin=protoc-gen-go-grpc=$(TOOLS)/protoc-gen-go-grpc \
		--plugin=protoc-gen-grpc-gateway=$(TOOLS)/protoc-gen-grpc-gateway \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		--grpc-gateway_out=. --grpc-gateway_opt=paths=source_relative \
		$(PROTO_FILES)

## tools: install protoc (Debian) and the pinned protoc plugins into bin/tools
tools:
	@if ! command -v protoc >/dev/null || [ ! -f $(PROTOC_INCLUDE)/google/protobuf/descriptor.proto ]; then \
		s=""; [ "$$(id -u)" -ne 0 ] && s=sudo; \
		$$s apt-get update -qq && $$s apt-get install -y -qq protobuf-compiler libprotobuf-dev; \
	fi
	@v="$$(protoc --version)"; [ "$$v" = "libprotoc $(PROTOC_VERSION)" ] || \
		{ echo "tools: need protoc $(PROTOC_VERSION) (Debian 12 protobuf-compiler), found: $$v" >&2; exit 1; }
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(TOOLS) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(PROTOC_GEN_GATEWAY_VERSION)
