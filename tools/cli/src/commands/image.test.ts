import { create } from "@bufbuild/protobuf";
import { JobSchema, JobStatus, QueuePhase } from "@luna/contracts/luna/image/v1/image_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { UsageError } from "../errors.js";
import { warmingUp } from "../format.js";
import { parseSize, ProgressView, statusWord } from "./image.js";

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

describe("scale to zero", () => {
  it("says a job waits for a GPU with the time left until its pool's expected wake", () => {
    const now = 1_000_000;
    const waking = create(JobSchema, { status: JobStatus.QUEUED, queuePhase: QueuePhase.WAITING_FOR_GPU, gpuReadyAt: timestampFromMs(now + 41_200) });
    expect(statusWord(waking, now)).toBe("waiting for a GPU (about 42 s)");
    expect(statusWord(waking, now + 50_000)).toBe("waiting for a GPU (any moment now)");
    expect(statusWord(create(JobSchema, { status: JobStatus.QUEUED, queuePhase: QueuePhase.IN_LINE, queuePosition: 1 }), now)).toBe("queued (1 ahead)");
  });

  it("says a reply waits for its model to warm up, with about how long", () => {
    expect(warmingUp("llama", 5_000, 60_000)).toBe("warming up llama (about 55 s)");
    expect(warmingUp("llama", 61_000, 60_000)).toBe("warming up llama (any moment now)");
  });
});
