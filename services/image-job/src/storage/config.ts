// Object storage settings, shared by the image-job service (signs URLs, deletes images) and the worker (stores the
// PNGs it downloads from ComfyUI). Both must point at the same store.
import * as z from "zod";
import { bool } from "@luna/kit";

export const storageConfigSchema = z.object({
  /** "local" (files under IMAGE_LOCAL_DIR, served by image-job's HTTP hook) or "s3" (any S3-compatible store). */
  IMAGE_STORE: z.enum(["local", "s3"]).default("local"),
  /** Folder of the local store (created if missing). */
  IMAGE_LOCAL_DIR: z.string().min(1).default(".luna/images"),
  /** S3 endpoint for MinIO/R2/etc. (e.g. http://minio:9000); unset = AWS. */
  IMAGE_S3_ENDPOINT: z.string().url().optional(),
  IMAGE_S3_BUCKET: z.string().min(1).default("luna-images"),
  IMAGE_S3_REGION: z.string().min(1).default("us-east-1"),
  /** Credentials; unset = the AWS SDK's default chain (env, instance profile, IRSA...). */
  IMAGE_S3_ACCESS_KEY_ID: z.string().optional(),
  IMAGE_S3_SECRET_ACCESS_KEY: z.string().optional(),
  /** Path-style URLs (http://host/bucket/key), needed by MinIO and most self-hosted stores. */
  IMAGE_S3_FORCE_PATH_STYLE: bool(false),
  /** Optional key prefix inside the bucket, e.g. "prod/". */
  IMAGE_S3_PREFIX: z.string().regex(/^([A-Za-z0-9._-]+\/)*$/, "expected segments ending in '/', e.g. prod/").default(""),
});

export type StorageConfig = z.infer<typeof storageConfigSchema>;
