// Builds the web client into tools/web/dist (served by the all-in-one process at /). `npm run dev -w tools/web`
// serves it with hot reload and sends the API calls to a running `make dev` (LUNA_URL, default :8080).
import { defaultClientConditions, defineConfig } from "vite";

const api = process.env.LUNA_URL ?? "http://localhost:8080";

export default defineConfig({
  root: import.meta.dirname,
  // Workspace packages (@luna/contracts) resolve to their TypeScript sources, as everywhere in the repository.
  resolve: { conditions: ["luna-source", ...defaultClientConditions] },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", reportCompressedSize: false },
  server: { proxy: { "^/luna\\.": { target: api, changeOrigin: true } } },
});
