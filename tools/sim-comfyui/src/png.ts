/**
 * Real PNG files without an image library: an RGB picture that is a pure function of its key (prompt text, seed,
 * model…) and size, encoded with node:zlib. Rows are copied out of one precomputed strip, so the cost is one pass of
 * deflate — a 1024×1024 image takes a few milliseconds, not a per-pixel JavaScript loop.
 */
import { createHash } from "node:crypto";
import { crc32, deflateSync } from "node:zlib";

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** ComfyUI's SaveImage writes with compress_level=4; its previews with 1. */
export const SAVE_COMPRESSION_LEVEL = 4;
export const PREVIEW_COMPRESSION_LEVEL = 1;

function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/**
 * Encodes an 8-bit RGB image. `raw` holds `height` scanlines, each a filter byte followed by `width * 3` bytes.
 * `text` entries become tEXt chunks (ComfyUI stores the prompt graph there).
 */
export function encodePng(width: number, height: number, raw: Buffer, opts: { level?: number; text?: Record<string, string> } = {}): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`invalid PNG size ${width}x${height}`);
  }
  if (raw.length !== (width * 3 + 1) * height) throw new RangeError("raw scanline data does not match the size");
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: truecolour (RGB)
  ihdr[10] = 0; // deflate
  ihdr[11] = 0; // adaptive filtering
  ihdr[12] = 0; // no interlace
  const parts = [PNG_SIGNATURE, chunk("IHDR", ihdr)];
  for (const [key, value] of Object.entries(opts.text ?? {})) {
    // tEXt is Latin-1; anything else is escaped so the chunk stays valid.
    const safe = value.replace(/[^\x20-\x7e\n]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    parts.push(chunk("tEXt", Buffer.concat([Buffer.from(key.slice(0, 79), "latin1"), Buffer.from([0]), Buffer.from(safe, "latin1")])));
  }
  parts.push(chunk("IDAT", deflateSync(raw, { level: opts.level ?? SAVE_COMPRESSION_LEVEL })));
  parts.push(chunk("IEND", Buffer.alloc(0)));
  return Buffer.concat(parts);
}

type Rgb = [number, number, number];

function colour(bytes: Buffer, at: number): Rgb {
  return [bytes[at] ?? 0, bytes[at + 1] ?? 0, bytes[at + 2] ?? 0];
}

/**
 * Raw scanlines of the picture for `key`: a diagonal gradient between two colours crossed by stripes, all chosen by
 * a SHA-256 of the key. `progress` in [0, 1] fades it in from grey, which is how previews show sampling progress.
 */
export function renderRaw(key: string, width: number, height: number, progress = 1): Buffer {
  const h = createHash("sha256").update(key).digest();
  const from = colour(h, 0);
  const to = colour(h, 3);
  const stripe = colour(h, 6);
  const period = 12 + ((h[9] ?? 0) % 52);
  const stripeWidth = Math.max(2, Math.floor(period / (2 + ((h[10] ?? 0) % 3))));
  const p = Math.min(1, Math.max(0, progress));

  // Pixel (x, y) has the colour of strip[x + y]: each row is the strip shifted by one pixel.
  const stripLen = width + height - 1;
  const strip = Buffer.alloc(stripLen * 3);
  for (let i = 0; i < stripLen; i++) {
    const t = stripLen === 1 ? 0 : i / (stripLen - 1);
    const inStripe = i % period < stripeWidth;
    for (let c = 0; c < 3; c++) {
      let v = (from[c] as number) + ((to[c] as number) - (from[c] as number)) * t;
      if (inStripe) v = (v + (stripe[c] as number)) / 2;
      strip[i * 3 + c] = Math.round(128 + (v - 128) * p);
    }
  }
  const rowLen = width * 3 + 1;
  const raw = Buffer.alloc(rowLen * height); // filter byte 0 ("None") on every row
  for (let y = 0; y < height; y++) strip.copy(raw, y * rowLen + 1, y * 3, (y + width) * 3);
  return raw;
}

/** A complete PNG of the picture for `key`. */
export function renderPng(key: string, width: number, height: number, opts: { progress?: number; level?: number; text?: Record<string, string> } = {}): Buffer {
  return encodePng(width, height, renderRaw(key, width, height, opts.progress ?? 1), opts);
}
