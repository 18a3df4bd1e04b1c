// Small helpers shared by the integration tests.
import type { Client } from "@connectrpc/connect";
import { JobStatus, type Job } from "@luna/contracts/luna/image/v1/image_pb.js";
import type { ImageService } from "@luna/contracts/luna/image/v1/image_service_pb.js";
import { eventually } from "./harness.js";

export const FINAL = [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED];

/** Polls GetJob until the job is final (or `status`). */
export async function waitForJob(client: Client<typeof ImageService>, jobId: string, status?: JobStatus, timeoutMs = 20_000): Promise<Job> {
  return eventually(async () => {
    const { job } = await client.getJob({ jobId });
    if (status !== undefined ? job!.status === status : FINAL.includes(job!.status)) return job!;
    return undefined;
  }, timeoutMs, `job ${jobId} ${status !== undefined ? JobStatus[status] : "final"}`);
}

/** Waits until the user's credits are all released or committed (no open hold). */
export async function waitForNoHold(balance: () => Promise<{ held: bigint; balance: bigint }>): Promise<{ held: bigint; balance: bigint }> {
  return eventually(async () => {
    const b = await balance();
    return b.held === 0n ? b : undefined;
  }, 15_000, "no open hold");
}
