/**
 * Luna's contracts, generated from `proto/` by buf + protoc-gen-es (see buf.gen.yaml). Import a file's messages and
 * services by path, e.g. `import { CreditsService } from "@luna/contracts/luna/billing/v1/credits_service_pb.js"`.
 * Never edit `src/gen` by hand: `make gen` rewrites it and `make check-gen` fails when it differs.
 */
export * from "./gen/grpc/health/v1/health_pb.js";
export * from "./gen/luna/common/v1/common_pb.js";
export * from "./gen/luna/events/v1/envelope_pb.js";
