// The programs the root Dockerfile builds (PROGRAM build argument), their images and what they listen on.
// CONVENTIONS.md: images luna/<program>:<tag>; API 8080 and admin 9090; sim-vllm 8000; sim-comfyui 8188.

export interface Program {
  name: string;
  /** The workspace the program is built from. */
  workspace: string;
  /** Its image copies /out of build-<stage>: "service" and "sim" are shared stages parametrised by PROGRAM. */
  stage: string;
  /** The script the image runs (relative to /app). */
  entrypoint: string;
  ports: number[];
}

export const PROGRAMS: readonly Program[] = [
  { name: "auth", workspace: "services/auth", stage: "service", entrypoint: "services/auth/dist/main.js", ports: [8080, 9090] },
  { name: "billing", workspace: "services/billing", stage: "service", entrypoint: "services/billing/dist/main.js", ports: [8080, 9090] },
  { name: "model-registry", workspace: "services/model-registry", stage: "service", entrypoint: "services/model-registry/dist/main.js", ports: [8080, 9090] },
  { name: "chat-router", workspace: "services/chat-router", stage: "service", entrypoint: "services/chat-router/dist/main.js", ports: [8080, 9090] },
  { name: "image-job", workspace: "services/image-job", stage: "service", entrypoint: "services/image-job/dist/main.js", ports: [8080, 9090] },
  { name: "image-worker", workspace: "services/image-job", stage: "service", entrypoint: "services/image-job/dist/worker/main.js", ports: [9090] },
  { name: "migrate", workspace: "tools/devstack", stage: "migrate", entrypoint: "tools/devstack/dist/migrate-cli.js", ports: [] },
  { name: "sim-vllm", workspace: "tools/sim-vllm", stage: "sim", entrypoint: "tools/sim-vllm/dist/main.js", ports: [8000] },
  { name: "sim-comfyui", workspace: "tools/sim-comfyui", stage: "sim", entrypoint: "tools/sim-comfyui/dist/main.js", ports: [8188] },
];

export function imageName(program: string, tag: string = process.env.LUNA_IMAGE_TAG ?? "dev"): string {
  return `luna/${program}:${tag}`;
}
