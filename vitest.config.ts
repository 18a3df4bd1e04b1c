import { defineConfig } from "vitest/config";

// One vitest run for the whole monorepo. Workspace packages resolve to their TypeScript sources through the
// "luna-source" export condition, so tests never need a prior build.
const conditions = ["luna-source", "node", "default"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ["luna-source"] } },
  test: {
    include: ["packages/*/src/**/*.test.ts", "packages/*/test/**/*.test.ts", "services/*/src/**/*.test.ts",
      "services/*/test/**/*.test.ts", "tools/*/src/**/*.test.ts", "tools/*/test/**/*.test.ts", "gateway/test/**/*.test.ts",
      "charts/test/**/*.test.ts", "k8s/test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**"],
    globalSetup: ["packages/kit/src/testing/global-setup.ts"],
    // Imports its JSON schema without an import attribute (written for bundlers): let vite transform it.
    server: { deps: { inline: ["@actions/workflow-parser"] } },
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    reporters: ["default"],
  },
});
