// The S3-compatible store (AWS S3, MinIO, Cloudflare R2, ...): PutObject/GetObject/DeleteObject and presigned GET
// URLs, so clients download images straight from the store.
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { isSafeKey } from "../domain/url-signing.js";
import type { ImageStore, StoredObject } from "./store.js";

export interface S3StoreOptions {
  bucket: string;
  region: string;
  /** e.g. http://minio:9000; unset = AWS. */
  endpoint?: string;
  forcePathStyle: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Key prefix inside the bucket ("" or "segment/"). */
  prefix: string;
  /** Deadline of one request (default 30 s). */
  requestTimeoutMs?: number;
}

/** Presigned URLs are limited to 7 days by SigV4. */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

export function createS3Store(opts: S3StoreOptions): ImageStore & { client: S3Client } {
  const config: S3ClientConfig = {
    region: opts.region,
    forcePathStyle: opts.forcePathStyle,
    requestHandler: { requestTimeout: opts.requestTimeoutMs ?? 30_000 },
    // The SDK retries throttling and 5xx answers itself.
    maxAttempts: 3,
  };
  if (opts.endpoint) config.endpoint = opts.endpoint;
  if (opts.credentials) config.credentials = opts.credentials;
  const client = new S3Client(config);
  const objectKey = (key: string): string => {
    if (!isSafeKey(key)) throw new Error(`unsafe object key ${JSON.stringify(key)}`);
    return `${opts.prefix}${key}`;
  };
  return {
    kind: "s3",
    client,
    async put(key, body, contentType) {
      await client.send(new PutObjectCommand({ Bucket: opts.bucket, Key: objectKey(key), Body: body, ContentType: contentType,
        ContentLength: body.length }));
    },
    async get(key): Promise<StoredObject | undefined> {
      try {
        const out = await client.send(new GetObjectCommand({ Bucket: opts.bucket, Key: objectKey(key) }));
        const bytes = await out.Body!.transformToByteArray();
        return { body: Buffer.from(bytes), contentType: out.ContentType ?? "application/octet-stream" };
      } catch (err) {
        const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
        if (e.name === "NoSuchKey" || e.$metadata?.httpStatusCode === 404) return undefined;
        throw err;
      }
    },
    async delete(key) {
      await client.send(new DeleteObjectCommand({ Bucket: opts.bucket, Key: objectKey(key) }));
    },
    async signedUrl(key, expiresAt) {
      const seconds = Math.min(MAX_PRESIGN_SECONDS, Math.max(1, Math.ceil((expiresAt.getTime() - Date.now()) / 1000)));
      return getSignedUrl(client, new GetObjectCommand({ Bucket: opts.bucket, Key: objectKey(key) }), { expiresIn: seconds });
    },
  };
}
