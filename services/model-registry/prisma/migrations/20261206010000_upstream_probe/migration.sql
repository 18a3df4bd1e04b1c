-- How a model's replicas are probed: "OPENAI" (vLLM), "COMFYUI" (ComfyUI's /system_stats) or "WORKER" (the image
-- worker's /readyz on its admin port: cluster pools, where ComfyUI listens on 127.0.0.1 inside its pod). "" (rows
-- written before) = the kind's default, which is what they were probed with.
ALTER TABLE "models" ADD COLUMN "upstream_probe" TEXT NOT NULL DEFAULT '';
ALTER TABLE "models" ADD CONSTRAINT "models_upstream_probe_check" CHECK ("upstream_probe" IN ('', 'OPENAI', 'COMFYUI', 'WORKER'));
