// The root Dockerfile against the workspace layout, without a container engine (make test stays engine-free).
// Each check is also shown failing on a deliberately broken input.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { checkDockerfile, duplicateStages, parseStages, readWorkspaces, resolveStage, workspaceClosure } from "../src/dockerfile-check.js";
import { PROGRAMS } from "../src/programs.js";

const root = resolve(import.meta.dirname, "../../..");
const dockerfile = readFileSync(join(root, "Dockerfile"), "utf8");

describe("root Dockerfile", () => {
  it("matches the workspace layout: every program's build copies exactly its transitive workspaces", () => {
    expect(checkDockerfile(dockerfile, root)).toEqual([]);
  });

  it("computes the closures from package.json (auth needs contracts and kit; the simulators only themselves)", () => {
    const ws = readWorkspaces(root);
    expect(workspaceClosure("services/auth", ws)).toEqual(["packages/contracts", "packages/kit", "services/auth"]);
    expect(workspaceClosure("tools/devstack", ws)).toEqual(["packages/contracts", "packages/kit", "tools/devstack"]);
    expect(workspaceClosure("tools/sim-vllm", ws)).toEqual(["tools/sim-vllm"]);
  });

  it("has one program stage per PROGRAM value, and the five per-service Dockerfiles are gone", () => {
    const stages = parseStages(dockerfile).map((s) => s.name).filter((n) => n.startsWith("program-"));
    expect(stages.sort()).toEqual(PROGRAMS.map((p) => `program-${p.name}`).sort());
    for (const s of ["auth", "billing", "chat-router", "image-job", "model-registry"]) {
      expect(() => readFileSync(join(root, "services", s, "Dockerfile"))).toThrow();
    }
  });

  it("builds the five services in ONE stage parametrised by the service: per PROGRAM it expands to that service alone", () => {
    const stages = parseStages(dockerfile);
    expect(stages.filter((s) => s.name.startsWith("build-")).map((s) => s.name).sort()).toEqual(["build-base", "build-migrate", "build-service", "build-sim"]);
    expect(duplicateStages(stages)).toEqual([]);
    const worker = resolveStage(stages, "build-service", "image-worker");
    expect(worker.problems).toEqual([]);
    expect(worker.lines).toContain("COPY services/image-job services/image-job");
    expect(worker.lines.join("\n")).not.toMatch(/services\/(auth|billing|model-registry|chat-router)\b/);
    const auth = resolveStage(stages, "build-service", "auth").lines;
    expect(auth.find((l) => l.startsWith("RUN --mount"))).toMatch(/-w packages\/contracts -w packages\/kit -w services\/auth$/);
    // the manifest-only layer (npm ci) comes before any source COPY, so source edits keep its cache
    const ci = auth.findIndex((l) => l.includes("npm ci"));
    expect(auth.findIndex((l) => l === "COPY services/auth services/auth")).toBeGreaterThan(ci);
    expect(auth.slice(0, ci).every((l) => /^COPY \S+\/package\.json \S+\/$/.test(l))).toBe(true);
  });

  it("fails when the services' build stage is copied per service again (the layout before the shared stage)", () => {
    const stages = parseStages(dockerfile);
    const service = dockerfile.slice(dockerfile.indexOf("FROM service-${PROGRAM} AS build-service"), dockerfile.indexOf("# luna-migrate"));
    const copies = ["billing", "chat-router"].map((s) => service.replace("FROM service-${PROGRAM} AS build-service", `FROM build-base AS build-${s}`).replaceAll("${SERVICE}", s)).join("");
    const broken = dockerfile.replace("# luna-migrate", `${copies}# luna-migrate`);
    expect(duplicateStages(parseStages(broken))).toEqual([["build-billing", "build-chat-router"]]);
    expect(checkDockerfile(broken, root).join("\n")).toMatch(/build stages \[build-billing, build-chat-router\] are copies differing only in a name/);
    expect(stages.length).toBeLessThan(parseStages(broken).length);
  });

  it("fails when the shared build stage forgets a workspace its programs depend on", () => {
    const broken = dockerfile.replace("FROM service-${PROGRAM} AS build-service\nCOPY packages/contracts/package.json packages/contracts/\nCOPY packages/kit/package.json packages/kit/\n",
      "FROM service-${PROGRAM} AS build-service\nCOPY packages/contracts/package.json packages/contracts/\n");
    expect(broken).not.toBe(dockerfile);
    const problems = checkDockerfile(broken, root).join("\n");
    expect(problems).toMatch(/build-service \[PROGRAM=auth\] copies the manifests of \[packages\/contracts, services\/auth\], but services\/auth needs/);
    expect(problems).toMatch(/build-service \[PROGRAM=image-worker\] copies the manifests of \[packages\/contracts, services\/image-job\], but services\/image-job needs/);
  });

  it("fails when a program's alias stage names the wrong service, is missing, or a variable is undefined", () => {
    const wrong = dockerfile.replace("FROM build-base AS service-image-worker\nENV SERVICE=image-job", "FROM build-base AS service-image-worker\nENV SERVICE=auth");
    expect(wrong).not.toBe(dockerfile);
    const w = checkDockerfile(wrong, root).join("\n");
    expect(w).toMatch(/build-service \[PROGRAM=image-worker\] copies the sources of \[packages\/contracts, packages\/kit, services\/auth\], but services\/image-job needs/);
    expect(w).toMatch(/build-service \[PROGRAM=image-worker\] does not compile services\/image-job/);
    const missing = dockerfile.replace("FROM build-base AS service-billing\nENV SERVICE=billing\n", "");
    expect(missing).not.toBe(dockerfile);
    expect(checkDockerfile(missing, root).join("\n")).toMatch(/build-service \[PROGRAM=billing\] starts FROM service-billing, which is not a stage/);
    const typo = dockerfile.replace("COPY services/${SERVICE} services/${SERVICE}", "COPY services/${SERVICES} services/${SERVICE}");
    expect(typo).not.toBe(dockerfile);
    expect(checkDockerfile(typo, root).join("\n")).toMatch(/build-service \[PROGRAM=chat-router\] uses \$\{SERVICES\}, which no ENV\/ARG/);
  });

  it("fails when a program gains a workspace dependency its build stage does not copy", () => {
    const ws = readWorkspaces(root);
    const vllm = [...ws.values()].find((w) => w.dir === "tools/sim-vllm")!;
    ws.set(vllm.name, { ...vllm, deps: [...vllm.deps, "@luna/kit"] });
    const problems = checkDockerfile(dockerfile, root, ws).join("\n");
    expect(problems).toMatch(/build-sim \[PROGRAM=sim-vllm\] copies the manifests of \[tools\/sim-vllm\], but tools\/sim-vllm needs \[packages\/contracts, packages\/kit, tools\/sim-vllm\]/);
    expect(problems).toMatch(/build-sim \[PROGRAM=sim-vllm\] npm ci -w installs/);
  });

  it("fails when a program runs an entrypoint that does not exist, or a PROGRAM value has no stage", () => {
    const entry = dockerfile.replace('CMD ["node", "services/image-job/dist/worker/main.js"]', 'CMD ["node", "services/image-job/dist/worker/nope.js"]');
    expect(checkDockerfile(entry, root).join("\n")).toMatch(/program-image-worker does not run services\/image-job\/dist\/worker\/main\.js/);
    const programs = [...PROGRAMS, { name: "ghost", workspace: "tools/ghost", stage: "ghost", entrypoint: "tools/ghost/dist/main.js", ports: [] }];
    const problems = checkDockerfile(dockerfile, root, undefined, programs).join("\n");
    expect(problems).toMatch(/program stages .* differ from the programs/);
    const missingSource = PROGRAMS.map((p) => (p.name === "auth" ? { ...p, entrypoint: "services/auth/dist/nope.js" } : p));
    expect(checkDockerfile(dockerfile, root, undefined, missingSource).join("\n")).toMatch(/entrypoint services\/auth\/dist\/nope\.js has no source/);
  });

  it("fails without the runtime rules: non-root uid, NODE_IMAGE argument, OCI labels, exposed ports, all migrations", () => {
    expect(checkDockerfile(dockerfile.replace("USER 10001:10001", "USER root"), root).join("\n")).toMatch(/USER 10001:10001/);
    expect(checkDockerfile(dockerfile.replace(/^ARG NODE_IMAGE=.*$/m, "ARG NODE_IMAGE"), root).join("\n")).toMatch(/ARG NODE_IMAGE/);
    expect(checkDockerfile(dockerfile.replace(/org\.opencontainers\.image\.revision=/, "x.revision="), root).join("\n")).toMatch(/image\.revision/);
    expect(checkDockerfile(dockerfile.replace("EXPOSE 8000", "EXPOSE 8001"), root).join("\n")).toMatch(/program-sim-vllm exposes \[8001\]/);
    const noBilling = dockerfile.replace(/^COPY services\/billing\/prisma\/migrations .*$/m, "");
    expect(checkDockerfile(noBilling, root).join("\n")).toMatch(/the migrate image ships migrations of \[auth, chat-router, image-job, model-registry\]/);
  });
});
