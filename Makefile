# rollguard: build, test against the local sandbox, demo, bench.
GO       ?= go
BIN      ?= bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/rollguard/rollguard/pkg/version.Version=$(VERSION)

.PHONY: all build test unit vet soak tidy helm-check stamp-version sandbox-up sandbox-down demo bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/rollguard ./cmd/rollguard

vet:
	@unformatted=$$(gofmt -l cmd pkg test); [ -z "$$unformatted" ] || { echo "gofmt: not formatted:" $$unformatted; exit 1; }
	$(GO) vet ./...

# go.mod and go.sum as `go mod tidy` leaves them: direct dependencies are
# not marked indirect and nothing unused is required.
tidy:
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy; run 'go mod tidy'. Diff:"; $(GO) mod tidy -diff; exit 1; }

# The Helm chart: helm lint (strict) and helm template, with the defaults
# and with the production values and config. The helm CLI is built from the
# Go module proxy once and cached (test/sandbox/build-helm); test/deploy
# compares the chart with the kustomize install object by object.
CHART := deploy/helm/rollguard
helm-check:
	@helm=$$(test/sandbox/build-helm | tail -n 1) && \
	  $$helm lint --strict $(CHART) && \
	  $$helm lint --strict $(CHART) -f $(CHART)/ci/production-values.yaml --set-file config=configs/production.yaml && \
	  $$helm template rollguard $(CHART) --namespace rollguard -f $(CHART)/ci/production-values.yaml \
	    --set-file config=configs/production.yaml >/dev/null && \
	  echo "helm template $(CHART): ok"

# Writes VERSION (v1.2.3) into the kustomize base's image tag and the chart.
stamp-version:
	@deploy/stamp-version

# Unit tests only: integration tests skip themselves when no sandbox is up.
unit:
	$(GO) test ./...

# The README's test command: brings the sandbox up (the first run on a
# machine builds the control plane, ~20 min on 2 cores), runs every test,
# and always brings the sandbox down again. Integration tests share the
# sandbox, so test binaries run one package at a time (-p 1).
test:
	@test/sandbox/up
	@status=0; \
	  $(MAKE) --no-print-directory vet tidy helm-check && $(GO) build ./... && $(GO) test -p 1 -count=1 -timeout 20m ./... || status=$$?; \
	  test/sandbox/down; exit $$status

# The model-based test of the responder, guard, journal and executor (see
# docs/design.md, invariants) for as long as SOAK says; make test runs it
# for a bounded number of checks.
SOAK ?= 30m
soak:
	ROLLGUARD_SOAK=$(SOAK) $(GO) test -count=1 -timeout 0 -run '^TestModel$$' -v ./pkg/response/

sandbox-up:
	@test/sandbox/up

sandbox-down:
	@test/sandbox/down

demo:
	@test/demo/run $(DEMO_FLAGS)

bench:
	@test/bench/run

clean:
	rm -rf $(BIN)
