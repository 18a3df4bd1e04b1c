// The S3 store against a local HTTP server impersonating S3 (path-style, as MinIO): what the AWS SDK sends for
// put/get/delete, how a missing object reads, and the shape of presigned URLs. (No real S3/MinIO here.)
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createS3Store } from "./s3-store.js";

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

let server: Server;
let endpoint: string;
const seen: Seen[] = [];
const objects = new Map<string, { body: Buffer; type: string }>();

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      const path = decodeURIComponent(new URL(req.url!, "http://x").pathname);
      if (req.method === "PUT") {
        objects.set(path, { body: decodeAwsChunked(body, req.headers), type: String(req.headers["content-type"] ?? "") });
        res.writeHead(200, { etag: '"abc"' }).end();
      } else if (req.method === "GET") {
        const obj = objects.get(path);
        if (!obj) {
          res.writeHead(404, { "content-type": "application/xml" })
            .end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>');
          return;
        }
        res.writeHead(200, { "content-type": obj.type, "content-length": String(obj.body.length) }).end(obj.body);
      } else if (req.method === "DELETE") {
        objects.delete(path);
        res.writeHead(204).end();
      } else {
        res.writeHead(405).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
});

/** Newer SDKs may stream bodies with aws-chunked encoding (trailing checksums); unwrap it like S3 does. */
function decodeAwsChunked(body: Buffer, headers: IncomingMessage["headers"]): Buffer {
  if (!String(headers["content-encoding"] ?? "").includes("aws-chunked")) return body;
  const out: Buffer[] = [];
  let i = 0;
  for (;;) {
    const eol = body.indexOf("\r\n", i);
    const size = parseInt(body.toString("latin1", i, eol).split(";")[0]!, 16);
    if (!size) break;
    out.push(body.subarray(eol + 2, eol + 2 + size));
    i = eol + 2 + size + 2;
  }
  return Buffer.concat(out);
}

const store = () => createS3Store({
  bucket: "luna-images", region: "us-east-1", endpoint, forcePathStyle: true, prefix: "test/",
  credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" },
});

describe("S3 store", () => {
  it("puts, gets and deletes objects with signed requests, path-style, under the prefix", async () => {
    const s = store();
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
    await s.put("images/u1/j/0.png", png, "image/png");
    const put = seen.find((r) => r.method === "PUT")!;
    expect(new URL(put.url, "http://x").pathname).toBe("/luna-images/test/images/u1/j/0.png");
    expect(put.headers.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/us-east-1\/s3\/aws4_request, SignedHeaders=.*host.*, Signature=[0-9a-f]{64}$/);
    expect(put.headers["x-amz-content-sha256"]).toBeTruthy();
    expect(put.headers["content-type"]).toBe("image/png");

    const got = await s.get("images/u1/j/0.png");
    expect(got?.body.equals(png)).toBe(true);
    expect(got?.contentType).toBe("image/png");
    expect(await s.get("images/u1/j/9.png")).toBeUndefined();

    await s.delete("images/u1/j/0.png");
    expect(seen.some((r) => r.method === "DELETE" && r.url.startsWith("/luna-images/test/images/u1/j/0.png"))).toBe(true);
    expect(await s.get("images/u1/j/0.png")).toBeUndefined();
    s.client.destroy();
  });

  it("presigns GET URLs that expire and that the store serves", async () => {
    const s = store();
    await s.put("images/u1/j/1.png", Buffer.from("png-bytes"), "image/png");
    const url = new URL(await s.signedUrl("images/u1/j/1.png", new Date(Date.now() + 600_000)));
    expect(url.origin).toBe(endpoint);
    expect(url.pathname).toBe("/luna-images/test/images/u1/j/1.png");
    expect(url.searchParams.get("X-Amz-Algorithm")).toBe("AWS4-HMAC-SHA256");
    expect(url.searchParams.get("X-Amz-Credential")).toMatch(/^AKIDEXAMPLE\/\d{8}\/us-east-1\/s3\/aws4_request$/);
    expect(Number(url.searchParams.get("X-Amz-Expires"))).toBeGreaterThanOrEqual(599);
    expect(Number(url.searchParams.get("X-Amz-Expires"))).toBeLessThanOrEqual(600);
    expect(url.searchParams.get("X-Amz-Signature")).toMatch(/^[0-9a-f]{64}$/);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("png-bytes");
    // SigV4 allows at most 7 days.
    const far = new URL(await s.signedUrl("images/u1/j/1.png", new Date(Date.now() + 30 * 86_400_000)));
    expect(far.searchParams.get("X-Amz-Expires")).toBe(String(7 * 24 * 3600));
    s.client.destroy();
  });

  it("refuses unsafe keys before any request", async () => {
    const s = store();
    const before = seen.length;
    await expect(s.put("../escape.png", Buffer.from("x"), "image/png")).rejects.toThrow(/unsafe/);
    expect(seen.length).toBe(before);
    s.client.destroy();
  });
});
