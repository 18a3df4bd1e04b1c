// grpc.health.v1 for Kubernetes `grpc:` probes, grpc-health-probe and Envoy health checks. Semantics follow the spec
// (and grpc-go's server): "" is the whole server, Check on an unknown name is NOT_FOUND, Watch streams the current
// status first and then each change (SERVICE_UNKNOWN while a name is unknown), shutdown() makes everything
// NOT_SERVING and ends every Watch.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
} from "@luna/contracts/grpc/health/v1/health_pb.js";
import type { HealthCheckResponse } from "@luna/contracts/grpc/health/v1/health_pb.js";
import type { MethodRules } from "./auth.js";

/** Auth rules for the health service: probes and load balancers call it without a token. */
export const healthAuthRules: MethodRules = { [Health.typeName]: "public" };

/** The health service of one server. Named HealthServer so it does not clash with the generated `Health` descriptor. */
export type HealthServer = {
  /** Registers grpc.health.v1.Health on a Connect router. */
  routes(router: ConnectRouter): void;
  /** Sets a service's status ("" = the whole server); an unknown name becomes known. Ignored after shutdown(). */
  setStatus(service: string, serving: boolean): void;
  /** Marks every service NOT_SERVING and ends all Watch streams (after sending them NOT_SERVING). */
  shutdown(): void;
};

/** Creates a health service where "" (and each of `opts.services`) starts SERVING. */
export function createHealth(opts: { services?: string[] } = {}): HealthServer {
  const statuses = new Map<string, ServingStatus>([["", ServingStatus.SERVING]]);
  for (const name of opts.services ?? []) statuses.set(name, ServingStatus.SERVING);
  let version = 0;
  let closed = false;
  const waiters = new Set<() => void>();

  function changed(): void {
    version++;
    for (const wake of [...waiters]) wake();
  }

  /** Resolves when anything changes after `seen`, or when `signal` aborts. */
  function waitForChange(seen: number, signal: AbortSignal): Promise<void> {
    if (version !== seen || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        waiters.delete(wake);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      waiters.add(wake);
      signal.addEventListener("abort", wake);
    });
  }

  const response = (status: ServingStatus): HealthCheckResponse => create(HealthCheckResponseSchema, { status });

  return {
    routes(router) {
      router.service(Health, {
        check(req) {
          const status = statuses.get(req.service);
          if (status === undefined) throw new ConnectError(`unknown service ${JSON.stringify(req.service)}`, Code.NotFound);
          return response(status);
        },
        list() {
          const out: Record<string, HealthCheckResponse> = {};
          for (const [name, status] of statuses) out[name] = response(status);
          return create(HealthListResponseSchema, { statuses: out });
        },
        async *watch(req, ctx) {
          let sent: ServingStatus | undefined;
          while (!ctx.signal.aborted) {
            const seen = version;
            const current = statuses.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
            if (current !== sent) {
              sent = current;
              yield response(current);
              continue; // look again: the status may have changed (or shutdown happened) while we were suspended
            }
            if (closed) return;
            await waitForChange(seen, ctx.signal);
          }
        },
      });
    },
    setStatus(service, serving) {
      if (closed) return;
      const status = serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
      if (statuses.get(service) === status) return;
      statuses.set(service, status);
      changed();
    },
    shutdown() {
      if (closed) return;
      closed = true;
      for (const name of statuses.keys()) statuses.set(name, ServingStatus.NOT_SERVING);
      changed();
    },
  };
}
