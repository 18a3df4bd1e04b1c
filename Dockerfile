# syntax=docker/dockerfile:1
# Every Luna image from one file (docs/DEPLOY.md#container-images). Build from the repository root:
#   docker build --build-arg PROGRAM=chat-router -t luna/chat-router:dev .
# PROGRAM: auth | billing | model-registry | chat-router | image-job | image-worker | migrate | sim-vllm | sim-comfyui
# Where no registry is reachable, `make images` builds a local Node 24 base and passes it as NODE_IMAGE/BUILD_IMAGE.
# tools/images/test/dockerfile.test.ts checks that, per PROGRAM, the build copies exactly its program's workspaces.

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

# ---- the five services share ONE build stage, build-service, parametrised by the service's name: the alias stage
# service-${PROGRAM} sets SERVICE (an ENV, which COPY paths expand like an ARG in BuildKit and buildah), so a service
# image installs, compiles and gathers only packages/contracts, packages/kit and services/${SERVICE}. Data files the
# code loads beside itself (auth's common-passwords.txt.gz) ship because gather.mjs copies non-code files of src/.
FROM build-base AS service-auth
ENV SERVICE=auth
FROM build-base AS service-billing
ENV SERVICE=billing
FROM build-base AS service-model-registry
ENV SERVICE=model-registry
FROM build-base AS service-chat-router
ENV SERVICE=chat-router
FROM build-base AS service-image-job
ENV SERVICE=image-job
# image-job and image-worker are one workspace: two entrypoints of the same build.
FROM build-base AS service-image-worker
ENV SERVICE=image-job

FROM service-${PROGRAM} AS build-service
COPY packages/contracts/package.json packages/contracts/
COPY packages/kit/package.json packages/kit/
COPY services/${SERVICE}/package.json services/${SERVICE}/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w packages/contracts -w packages/kit -w services/${SERVICE}
COPY tools/devstack/src/prisma-generate.mjs tools/devstack/src/
COPY packages/contracts packages/contracts
COPY packages/kit packages/kit
COPY services/${SERVICE} services/${SERVICE}
RUN node tools/devstack/src/prisma-generate.mjs ${SERVICE} \
 && node_modules/.bin/tsc -b services/${SERVICE} \
 && node /usr/local/lib/luna/gather.mjs /out packages/contracts packages/kit services/${SERVICE} \
 && cp -a services/${SERVICE}/prisma /out/services/${SERVICE}/

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

# The simulators: one stage the same way, tools/${TOOL} alone (no workspace dependencies).
FROM build-base AS tool-sim-vllm
ENV TOOL=sim-vllm
FROM build-base AS tool-sim-comfyui
ENV TOOL=sim-comfyui

FROM tool-${PROGRAM} AS build-sim
COPY tools/${TOOL}/package.json tools/${TOOL}/
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --ignore-scripts --include-workspace-root -w tools/${TOOL}
COPY tools/${TOOL} tools/${TOOL}
RUN node_modules/.bin/tsc -b tools/${TOOL} \
 && node /usr/local/lib/luna/gather.mjs /out tools/${TOOL}

# ---- runtime: Node 24 only (no npm, no compiler), numeric non-root user, read-only root filesystem friendly: the
# programs write nothing but /tmp (mount an emptyDir there). Node is PID 1; each program drains on SIGTERM itself.
FROM ${NODE_IMAGE} AS runtime
WORKDIR /app
ENV NODE_ENV=production LUNA_PORT=8080 LUNA_ADMIN_PORT=9090
USER 10001:10001

FROM runtime AS program-auth
COPY --from=build-service /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/auth/dist/main.js"]

FROM runtime AS program-billing
COPY --from=build-service /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/billing/dist/main.js"]

FROM runtime AS program-model-registry
COPY --from=build-service /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/model-registry/dist/main.js"]

FROM runtime AS program-chat-router
COPY --from=build-service /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/chat-router/dist/main.js"]

FROM runtime AS program-image-job
COPY --from=build-service /out/ /app/
EXPOSE 8080 9090
CMD ["node", "services/image-job/dist/main.js"]

# The worker beside ComfyUI: no API, only the admin port.
FROM runtime AS program-image-worker
COPY --from=build-service /out/ /app/
EXPOSE 9090
CMD ["node", "services/image-job/dist/worker/main.js"]

# A Kubernetes Job / Helm hook: `luna-migrate --service <name>` with DATABASE_URL; exits 0, a rerun is a no-op.
FROM runtime AS program-migrate
COPY --from=build-migrate /out/ /app/
ENTRYPOINT ["node", "tools/devstack/dist/migrate-cli.js"]
CMD ["--help"]

FROM runtime AS program-sim-vllm
COPY --from=build-sim /out/ /app/
ENV SIM_VLLM_HOST=0.0.0.0 SIM_VLLM_PORT=8000
EXPOSE 8000
CMD ["node", "tools/sim-vllm/dist/main.js"]

FROM runtime AS program-sim-comfyui
COPY --from=build-sim /out/ /app/
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
