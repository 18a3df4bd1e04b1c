-- Scale to zero (issue 19): a model whose pool may be at zero replicas on purpose is STANDBY, not OFFLINE, while it
-- has no healthy replica; cold_start_seconds is the wake time users are shown.
ALTER TABLE "models" ADD COLUMN "scale_to_zero" BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE "models" ADD COLUMN "cold_start_seconds" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "models" ADD CONSTRAINT "models_cold_start_check" CHECK ("cold_start_seconds" >= 0);
ALTER TABLE "models" DROP CONSTRAINT "models_health_status_check";
ALTER TABLE "models" ADD CONSTRAINT "models_health_status_check" CHECK ("health_status" IN ('AVAILABLE', 'DEGRADED', 'OFFLINE', 'STANDBY'));
