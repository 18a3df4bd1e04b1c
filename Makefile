# Luna — the two commands are `make dev` and `make test`; each installs what it needs first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)
NPM_STAMP := node_modules/.package-lock.json
# One process (no tsx wrapper relaying signals), TypeScript loaded by tsx, workspace sources via the luna-source condition.
TSX := node --conditions=luna-source --import tsx
PKG_JSONS := package.json $(wildcard gateway/package.json packages/*/package.json services/*/package.json tools/*/package.json)
PRISMA_SCHEMAS := $(wildcard services/*/prisma/schema.prisma)
PRISMA_STAMP := node_modules/.cache/luna/prisma.stamp

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(NPM_STAMP): package-lock.json $(PKG_JSONS)
	@command -v node >/dev/null || { echo "Node.js >= 20.19 is required (https://nodejs.org or your OS package manager)"; exit 1; }
	@echo "==> installing npm packages (npm ci)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(PRISMA_STAMP): $(NPM_STAMP) $(PRISMA_SCHEMAS)
	@echo "==> generating Prisma clients (offline)"
	node tools/devstack/src/prisma-generate.mjs
	@mkdir -p $(dir $@) && touch $@

.PHONY: deps
deps: $(NPM_STAMP) $(PRISMA_STAMP) ## Install npm packages and generate Prisma clients

.PHONY: web
web: $(NPM_STAMP) ## Build the reference web client (served by make dev at /)
	npm run -s build -w tools/web

.PHONY: dev
dev: deps web ## Run the whole platform locally (Postgres, Redis, NATS, all services, simulators) on :8080
	$(TSX) tools/allinone/src/main.ts

.PHONY: dev-split
dev-split: deps web ## Run every service as its own process behind a dev gateway on :8080 (as in the cluster)
	$(TSX) tools/split/src/main.ts

.PHONY: stack
stack: deps ## Start only Postgres, Redis and NATS under .luna/ (stop with `make stack-down`)
	$(TSX) tools/devstack/src/cli.ts up

.PHONY: stack-down
stack-down: $(NPM_STAMP) ## Stop the local Postgres, Redis and NATS
	$(TSX) tools/devstack/src/cli.ts down

.PHONY: test
test: deps lint check-gen typecheck ## Lint, check generated code, typecheck, then run every test against real servers
	@echo "==> running tests (vitest; starts Postgres, Redis and NATS on free ports)"
	node_modules/.bin/vitest run

.PHONY: unit
unit: deps ## Run the tests of one path quickly: make unit P=services/billing
	node_modules/.bin/vitest run $(P)

.PHONY: gateway
gateway: deps ## Regenerate the Envoy config charts/gateway/files/envoy.yaml from gateway/src/routes.ts (checked by make test)
	$(TSX) gateway/src/generate.ts

.PHONY: charts
charts: deps ## Helm checks of every chart (real helm 3.17.2: lint --strict, template, schemas, cross-object checks)
	node_modules/.bin/vitest run charts/test

.PHONY: charts-gen
charts-gen: $(NPM_STAMP) ## Regenerate the charts' values.schema.json (services, vllm, comfyui) and charts/README.md's values tables
	$(TSX) charts/test/values-schema.ts
	$(TSX) charts/test/gpu-values-schema.ts
	$(TSX) charts/test/values-doc.ts

.PHONY: gen
gen: $(NPM_STAMP) ## Regenerate TypeScript from proto/ and the Prisma clients
	node_modules/.bin/buf generate
	node tools/devstack/src/prisma-generate.mjs

.PHONY: check-gen
check-gen: $(NPM_STAMP) ## Fail when packages/contracts/src/gen differs from what proto/ generates
	@echo "==> checking generated contracts are up to date"
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	node_modules/.bin/buf generate -o "$$tmp"; \
	if ! diff -r "$$tmp/packages/contracts/src/gen" packages/contracts/src/gen >/dev/null; then \
	  diff -r "$$tmp/packages/contracts/src/gen" packages/contracts/src/gen | head -40 || true; \
	  echo "generated contracts are stale: run 'make gen' and commit packages/contracts/src/gen"; exit 1; fi

.PHONY: lint
lint: $(NPM_STAMP) ## ESLint and buf lint
	@echo "==> lint"
	node_modules/.bin/eslint --max-warnings=0 .
	node_modules/.bin/buf lint

.PHONY: typecheck
typecheck: deps ## Type-check every package (tsc -b), then the tests and benchmarks (tsconfig.tests.json)
	@echo "==> typecheck"
	node_modules/.bin/tsc -b
	node_modules/.bin/tsc -p tsconfig.tests.json

.PHONY: build
build: deps ## Compile every package to dist/
	node_modules/.bin/tsc -b

.PHONY: images
images: $(NPM_STAMP) ## Build every image (luna/<program>:dev) from ./Dockerfile with docker, else podman (installed if missing)
	$(TSX) tools/images/src/build.ts

.PHONY: image-base
image-base: $(NPM_STAMP) ## Build only the local Node 24 base images that `make images` uses where no registry is reachable
	$(TSX) tools/images/src/base-image.ts

.PHONY: image-smoke
image-smoke: deps ## Run the built images as containers against a local stack behind the dev gateway (see docs/DEPLOY.md)
	$(TSX) tools/images/src/smoke.ts

.PHONY: cluster-up
cluster-up: ## Create the kind cluster `luna` (k8s/kind/cluster.yaml) unless it exists; needs kind and docker/podman
	@kind get clusters 2>/dev/null | grep -qx luna || kind create cluster --config k8s/kind/cluster.yaml --wait 180s
	kubectl config use-context kind-luna

.PHONY: cluster-down
cluster-down: ## Delete the kind cluster `luna` and everything in it
	kind delete cluster --name luna

.PHONY: bootstrap
bootstrap: ## Install the infrastructure on the current kube context: k8s/bootstrap.sh --profile $(PROFILE) (default kind)
	k8s/bootstrap.sh --profile $(or $(PROFILE),kind)

.PHONY: cluster-test
cluster-test: $(NPM_STAMP) ## Run the end-to-end suite against Luna on the current kube context through its gateway (k8s/ci/e2e.sh; NAMESPACE=luna)
	k8s/ci/e2e.sh $(or $(NAMESPACE),luna)

.PHONY: breaking
breaking: $(NPM_STAMP) ## buf breaking against main
	node_modules/.bin/buf breaking --against '.git#branch=main'

.PHONY: bench
bench: deps ## Run every benchmark and write docs/PERFORMANCE.md
	$(TSX) tools/bench/src/run-all.ts $(ONLY)

.PHONY: clean
clean: ## Stop the local stack and wipe its data (.luna/) and build output
	-$(TSX) tools/devstack/src/cli.ts down 2>/dev/null
	rm -rf .luna packages/*/dist services/*/dist tools/*/dist tools/web/dist-node services/*/src/generated $(PRISMA_STAMP)
	find . -name '*.tsbuildinfo' -not -path './node_modules/*' -delete
