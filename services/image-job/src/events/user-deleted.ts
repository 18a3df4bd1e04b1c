// `luna.events.user.deleted`: the account is gone, so are its images. Open jobs are cancelled (their holds
// released), then every image object and every job record of the user is deleted. Idempotent: a redelivery finds
// less to delete.
import { fromBinary } from "@bufbuild/protobuf";
import { UserDeletedSchema } from "@luna/contracts/luna/events/v1/user_events_pb.js";
import { EVENTS_STREAM, runConsumer, type ConsumerHandle, type MinimalLogger } from "@luna/kit";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { JobStore } from "../data/job-store.js";
import type { Lifecycle } from "../lifecycle.js";
import type { ImageStore } from "../storage/store.js";

export const USER_DELETED_SUBJECT = "luna.events.user.deleted";

/** Removes everything image-job holds for a user. */
export async function forgetUser(userId: string, deps: { store: JobStore; images: ImageStore; lifecycle: Lifecycle }): Promise<{ jobs: number; images: number; remaining: number }> {
  for (const jobId of await deps.store.openJobIds(userId)) {
    const out = await deps.store.cancel(jobId, userId);
    if (out) deps.lifecycle.changed(out.job, out.previousStatus);
  }
  const keys = await deps.store.imageKeysOf(userId);
  for (const key of keys) await deps.images.delete(key);
  const jobs = await deps.store.deleteUserData(userId);
  return { jobs, images: keys.length, remaining: await deps.store.countJobs(userId) };
}

export function startUserDeletedConsumer(opts: {
  js: JetStreamClient;
  store: JobStore;
  images: ImageStore;
  lifecycle: Lifecycle;
  log: MinimalLogger;
}): ConsumerHandle {
  return runConsumer({
    js: opts.js,
    stream: EVENTS_STREAM,
    durable: "image-job-user-deleted",
    filterSubject: USER_DELETED_SUBJECT,
    log: opts.log,
    async handle(msg) {
      let userId = "";
      try {
        userId = fromBinary(UserDeletedSchema, msg.data).userId;
      } catch {
        userId = "";
      }
      if (!userId) return "term";
      const removed = await forgetUser(userId, opts);
      if (removed.jobs > 0) opts.log.info({ userId, ...removed }, "deleted the image data of a deleted user");
      // Jobs whose credits are not settled yet stay until they are: try again later.
      return removed.remaining > 0 ? "retry" : "ack";
    },
  });
}
