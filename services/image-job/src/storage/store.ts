// Where generated images live. One interface, two backends: a local folder (served by image-job's HTTP hook with
// HMAC-signed URLs) and any S3-compatible store (presigned GET URLs).

export interface StoredObject {
  body: Buffer;
  contentType: string;
}

export interface ImageStore {
  /** "local" or "s3". */
  readonly kind: string;
  /** Writes (or overwrites) an object. Keys are deterministic per job and image, so a retry writes the same key. */
  put(key: string, body: Buffer, contentType: string): Promise<void>;
  /** The object, or undefined when it does not exist. */
  get(key: string): Promise<StoredObject | undefined>;
  /** Deletes an object; deleting a missing one is not an error. */
  delete(key: string): Promise<void>;
  /** A URL that serves the object to anyone holding it until `expiresAt`. */
  signedUrl(key: string, expiresAt: Date): Promise<string>;
}
