# syntax=docker/dockerfile:1
# Every Luna image from one file (docs/DEPLOY.md#container-images). Build from the repository root:
#   docker build --build-arg PROGRAM=chat-router -t luna/chat-router:dev .
# PROGRAM: auth | billing | model-registry | chat-router | image-job | image-worker | migrate | sim-vllm | sim-comfyui
# Where no registry is reachable, `make images` builds a local Node 24 base and passes it as NODE_IMAGE/BUILD_IMAGE.
# tools/images/test/dockerfile.test.ts checks that each build stage copies exactly its program's workspaces.

ARG NODE_IMAGE=node:24-slim
ARG BUILD_IMAGE=node:24-slim
ARG PROGRAM=auth

# ---- build stages: the root manifest and lock, then per program its workspaces' manifests (one cached `npm ci`
# layer per program that source changes do not invalidate), then their sources; compile, generate the Prisma client
# offline, and gather into /out what runs: dist/ plus the npm packages production dependencies reach (gather.mjs).
FROM ${BUILD_IMAGE} AS build-base
WORKDIR /app
ENV CI=true NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false NPM_CONFIG_LOGLEVEL=error
COPY package.json package-lock.json tsconfig.base.json ./
COPY tools/images/gather.mjs /usr/local/lib/luna/gather.mjs

FROM build-base AS build-auth
COPY packages/contracts/package.json packages/contracts/
COPY packages/kit/package.json packages/kit/
COPY services/auth/package.json services/auth/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w packages/contracts -w packages/kit -w services/auth
COPY tools/devstack/src/prisma-generate.mjs tools/devstack/src/
COPY packages/contracts packages/contracts
COPY packages/kit packages/kit
COPY services/auth services/auth
RUN node tools/devstack/src/prisma-generate.mjs auth \
 && node_modules/.bin/tsc -b services/auth \
 && cp services/auth/src/domain/common-passwords.txt.gz services/auth/dist/domain/ \
 && node /usr/local/lib/luna/gather.mjs /out packages/contracts packages/kit services/auth \
 && cp -a services/auth/prisma /out/services/auth/

FROM build-base AS build-billing
COPY packages/contracts/package.json packages/contracts/
COPY packages/kit/package.json packages/kit/
COPY services/billing/package.json services/billing/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w packages/contracts -w packages/kit -w services/billing
COPY tools/devstack/src/prisma-generate.mjs tools/devstack/src/
COPY packages/contracts packages/contracts
COPY packages/kit packages/kit
COPY services/billing services/billing
RUN node tools/devstack/src/prisma-generate.mjs billing \
 && node_modules/.bin/tsc -b services/billing \
 && node /usr/local/lib/luna/gather.mjs /out packages/contracts packages/kit services/billing \
 && cp -a services/billing/prisma /out/services/billing/

FROM build-base AS build-model-registry
COPY packages/contracts/package.json packages/contracts/
COPY packages/kit/package.json packages/kit/
COPY services/model-registry/package.json services/model-registry/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w packages/contracts -w packages/kit -w services/model-registry
COPY tools/devstack/src/prisma-generate.mjs tools/devstack/src/
COPY packages/contracts packages/contracts
COPY packages/kit packages/kit
COPY services/model-registry services/model-registry
RUN node tools/devstack/src/prisma-generate.mjs model-registry \
 && node_modules/.bin/tsc -b services/model-registry \
 && node /usr/local/lib/luna/gather.mjs /out packages/contracts packages/kit services/model-registry \
 && cp -a services/model-registry/prisma /out/services/model-registry/

FROM build-base AS build-chat-router
COPY packages/contracts/package.json packages/contracts/
COPY packages/kit/package.json packages/kit/
COPY services/chat-router/package.json services/chat-router/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w packages/contracts -w packages/kit -w services/chat-router
COPY tools/devstack/src/prisma-generate.mjs tools/devstack/src/
COPY packages/contracts packages/contracts
COPY packages/kit packages/kit
COPY services/chat-router services/chat-router
RUN node tools/devstack/src/prisma-generate.mjs chat-router \
 && node_modules/.bin/tsc -b services/chat-router \
 && node /usr/local/lib/luna/gather.mjs /out packages/contracts packages/kit services/chat-router \
 && cp -a services/chat-router/prisma /out/services/chat-router/

# image-job and image-worker are one workspace: two entrypoints of the same build.
FROM build-base AS build-image-job
COPY packages/contracts/package.json packages/contracts/
COPY packages/kit/package.json packages/kit/
COPY services/image-job/package.json services/image-job/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w packages/contracts -w packages/kit -w services/image-job
COPY tools/devstack/src/prisma-generate.mjs tools/devstack/src/
COPY packages/contracts packages/contracts
COPY packages/kit packages/kit
COPY services/image-job services/image-job
RUN node tools/devstack/src/prisma-generate.mjs image-job \
 && node_modules/.bin/tsc -b services/image-job \
 && node /usr/local/lib/luna/gather.mjs /out packages/contracts packages/kit services/image-job \
 && cp -a services/image-job/prisma /out/services/image-job/

# luna-migrate, with every service's migrations at /app/services/<name>/prisma/migrations (`--service <name>`).
FROM build-base AS build-migrate
COPY packages/contracts/package.json packages/contracts/
COPY packages/kit/package.json packages/kit/
COPY tools/devstack/package.json tools/devstack/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w packages/contracts -w packages/kit -w tools/devstack
COPY packages/contracts packages/contracts
COPY packages/kit packages/kit
COPY tools/devstack tools/devstack
COPY services/auth/prisma/migrations /out/services/auth/prisma/migrations
COPY services/billing/prisma/migrations /out/services/billing/prisma/migrations
COPY services/model-registry/prisma/migrations /out/services/model-registry/prisma/migrations
COPY services/chat-router/prisma/migrations /out/services/chat-router/prisma/migrations
COPY services/image-job/prisma/migrations /out/services/image-job/prisma/migrations
RUN node_modules/.bin/tsc -b tools/devstack \
 && node /usr/local/lib/luna/gather.mjs /out packages/contracts packages/kit tools/devstack

FROM build-base AS build-sim-vllm
COPY tools/sim-vllm/package.json tools/sim-vllm/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w tools/sim-vllm
COPY tools/sim-vllm tools/sim-vllm
RUN node_modules/.bin/tsc -b tools/sim-vllm \
 && node /usr/local/lib/luna/gather.mjs /out tools/sim-vllm

FROM build-base AS build-sim-comfyui
COPY tools/sim-comfyui/package.json tools/sim-comfyui/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w tools/sim-comfyui
COPY tools/sim-comfyui tools/sim-comfyui
RUN node_modules/.bin/tsc -b tools/sim-comfyui \
 && node /usr/local/lib/luna/gather.mjs /out tools/sim-comfyui

# ---- runtime: Node 24 only (no npm, no compiler), numeric non-root user, read-only root filesystem friendly: the
# programs write nothing but /tmp (mount an emptyDir there). Node is PID 1; each program drains on SIGTERM itself.
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
ENV NODE_ENV=production LUNA_PORT=8080 LUNA_ADMIN_PORT=9090
USER 10001:10001

FROM runtime AS program-auth
COPY --from=build-auth /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/auth/dist/main.js"]

FROM runtime AS program-billing
COPY --from=build-billing /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/billing/dist/main.js"]

FROM runtime AS program-model-registry
COPY --from=build-model-registry /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/model-registry/dist/main.js"]

FROM runtime AS program-chat-router
COPY --from=build-chat-router /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/chat-router/dist/main.js"]

FROM runtime AS program-image-job
COPY --from=build-image-job /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/image-job/dist/main.js"]

# The worker beside ComfyUI: no API, only the admin port.
FROM runtime AS program-image-worker
COPY --from=build-image-job /out/ /app/
EXPOSE 9090
CMD ["node", "services/image-job/dist/worker/main.js"]

# A Kubernetes Job / Helm hook: `luna-migrate --service <name>` with DATABASE_URL; exits 0, a rerun is a no-op.
FROM runtime AS program-migrate
COPY --from=build-migrate /out/ /app/
ENTRYPOINT ["node", "tools/devstack/dist/migrate-cli.js"]
CMD ["--help"]

FROM runtime AS program-sim-vllm
COPY --from=build-sim-vllm /out/ /app/
ENV SIM_VLLM_HOST=0.0.0.0 SIM_VLLM_PORT=8000
EXPOSE 8000
CMD ["node", "tools/sim-vllm/dist/main.js"]

FROM runtime AS program-sim-comfyui
COPY --from=build-sim-comfyui /out/ /app/
ENV SIM_COMFYUI_HOST=0.0.0.0 SIM_COMFYUI_PORT=8188
EXPOSE 8188
CMD ["node", "tools/sim-comfyui/dist/main.js"]

FROM program-${PROGRAM}
ARG PROGRAM
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://example.invalid/luna
LABEL org.opencontainers.image.title="luna/${PROGRAM}" \
      org.opencontainers.image.description="Luna ${PROGRAM}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}"
