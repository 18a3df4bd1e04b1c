import { create } from "@bufbuild/protobuf";
import { JobSchema, JobStatus } from "@luna/contracts/luna/image/v1/image_pb.js";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { UsageError } from "../errors.js";
import { parseSize, ProgressView } from "./image.js";

function output(isTTY: boolean) {
  const writes: string[] = [];
  const out = Object.assign(new Writable({ write(chunk, _e, cb) {
    writes.push(chunk.toString());
    cb();
  } }), { isTTY });
  return { out, writes };
}

const job = (status: JobStatus, queuePosition = 0) => create(JobSchema, { status, queuePosition });

describe("image progress", () => {
  it("redraws one bar in place on a terminal", () => {
    const { out, writes } = output(true);
    const view = new ProgressView(out);
    view.update(job(JobStatus.QUEUED, 2), 0);
    view.update(job(JobStatus.RUNNING), 50);
    view.update(job(JobStatus.SUCCEEDED), 0);
    view.end();
    expect(writes).toEqual([
      `\r\x1b[2K[${"░".repeat(24)}]   0%  queued (2 ahead)`,
      `\r\x1b[2K[${"█".repeat(12)}${"░".repeat(12)}]  50%  generating`,
      `\r\x1b[2K[${"█".repeat(24)}] 100%  done`,
      "\n",
    ]);
  });

  it("prints a few plain lines elsewhere: at each status change and each quarter", () => {
    const { out, writes } = output(false);
    const view = new ProgressView(out);
    view.update(job(JobStatus.QUEUED), 0);
    view.update(job(JobStatus.QUEUED), 0);
    for (const p of [0, 10, 20, 30, 60, 99]) view.update(job(JobStatus.RUNNING), p);
    view.update(job(JobStatus.SUCCEEDED), 99);
    view.end();
    expect(writes).toEqual(["queued (next) 0%\n", "generating 0%\n", "generating 30%\n", "generating 60%\n", "generating 99%\n", "done 100%\n"]);
  });

  it("reads sizes like 1024x768", () => {
    expect(parseSize("1024x768", "image")).toEqual([1024, 768]);
    expect(parseSize("896X1152", "image")).toEqual([896, 1152]);
    expect(() => parseSize("1024", "image")).toThrow(UsageError);
    expect(() => parseSize("1024x", "image")).toThrow(/--size must look like 1024x1024, got "1024x"/);
  });
});
