// The model registry's own settings (the runtime's shared ones — database, NATS, ports, auth — are read by the kit).
import * as z from "zod";
import { bool, csv, duration, url, eventRetentionConfigSchema } from "@luna/kit";

const positiveInt = (def: number) =>
  z
    .string()
    .regex(/^\d+$/, "expected a whole number")
    .transform(Number)
    .refine((n) => n >= 1, "expected at least 1")
    .optional()
    .transform((v) => v ?? def);

export const configSchema = z.object({
  /** Insert the default catalog (models and workflows missing by id) on start. Never overwrites existing rows. */
  REGISTRY_SEED: bool(true),
  /** Upstream of the seeded text models: a vLLM / OpenAI-compatible server (the simulator by default). */
  REGISTRY_SEED_VLLM_URL: url("http://127.0.0.1:8000", { protocols: ["http:", "https:"] }),
  /** Upstream of the seeded image models: a ComfyUI (the simulator by default). */
  REGISTRY_SEED_COMFYUI_URL: url("http://127.0.0.1:8188", { protocols: ["http:", "https:"] }),
  /**
   * Seeded image models whose pool runs next to an image worker, as "model-id=http://host:adminPort,...": each is
   * seeded with that URL as resolve_url (a headless Service of the workers' admin port, one replica per address) and
   * probed at the workers' /readyz (which checks their ComfyUI) instead of REGISTRY_SEED_COMFYUI_URL's
   * /system_stats. Empty (make dev): every image model at REGISTRY_SEED_COMFYUI_URL. The charts set it.
   */
  REGISTRY_SEED_IMAGE_WORKERS: csv([]).transform((entries, ctx) => {
    const map = new Map<string, string>();
    for (const entry of entries) {
      const eq = entry.indexOf("=");
      const id = entry.slice(0, eq).trim();
      const target = entry.slice(eq + 1).trim();
      let ok = eq > 0 && /^[a-z0-9][a-z0-9.-]*$/.test(id);
      try {
        ok &&= ["http:", "https:"].includes(new URL(target).protocol);
      } catch {
        ok = false;
      }
      if (!ok) {
        ctx.addIssue({ code: "custom", message: `expected model-id=http://host:port entries, got "${entry}"` });
        return z.NEVER;
      }
      map.set(id, target);
    }
    return map;
  }),
  /** How often every enabled model's replicas are probed; "0s" turns probing off. */
  REGISTRY_HEALTH_INTERVAL: duration("10s"),
  /** Deadline of one probe request. */
  REGISTRY_HEALTH_TIMEOUT: duration("2s"),
  /** Consecutive failed probes before a replica that was healthy counts as unhealthy (one success heals). */
  REGISTRY_HEALTH_FAILURES: positiveInt(2),
  /** LUNA_OUTBOX_RETAIN, LUNA_INBOX_RETAIN, LUNA_EVENT_PRUNE_INTERVAL (kit: event tables' retention). */
  ...eventRetentionConfigSchema.shape,
});

export type RegistryConfig = z.infer<typeof configSchema>;
