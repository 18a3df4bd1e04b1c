/** Domain errors → Connect errors (kit helpers); anything else propagates to the kit's error interceptor. */
import { failedPrecondition, invalidArgument, notFound, resourceExhausted } from "@luna/kit";
import { Code, ConnectError } from "@connectrpc/connect";
import { BillingError } from "../domain/errors.js";

export function toRpcError(err: unknown): unknown {
  if (!(err instanceof BillingError)) return err;
  switch (err.kind) {
    case "invalid_argument":
      return invalidArgument(err.field ?? "request", err.message);
    case "not_found":
      // The domain message already reads "<what> not found".
      return new ConnectError(err.message, Code.NotFound);
    case "failed_precondition":
      return failedPrecondition(err.message);
    case "resource_exhausted":
      return resourceExhausted(err.message);
  }
}

/** Runs a handler body, translating domain errors. */
export async function rpc<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw toRpcError(err);
  }
}

export { notFound };
