import { Counter, type Registry } from "prom-client";

/** Auth's domain metrics (the kit adds RED metrics per RPC). Labels are small closed sets. */
export type AuthMetrics = {
  signIn(outcome: "success" | "wrong_credentials" | "throttled" | "disabled"): void;
  signUp(outcome: "success" | "invite_rejected" | "email_taken" | "throttled"): void;
  refresh(outcome: "rotated" | "grace" | "replayed" | "expired" | "session_ended" | "user_inactive" | "unknown"): void;
};

export const noopAuthMetrics: AuthMetrics = { signIn() {}, signUp() {}, refresh() {} };

export function createAuthMetrics(registry: Registry): AuthMetrics {
  const signIns = new Counter({ name: "luna_auth_sign_ins_total", help: "Sign-in attempts by outcome.", labelNames: ["outcome"], registers: [registry] });
  const signUps = new Counter({ name: "luna_auth_sign_ups_total", help: "Sign-up attempts by outcome.", labelNames: ["outcome"], registers: [registry] });
  const refreshes = new Counter({ name: "luna_auth_refreshes_total", help: "Refresh-token exchanges by outcome (replayed = a family was revoked).", labelNames: ["outcome"], registers: [registry] });
  return {
    signIn: (outcome) => signIns.inc({ outcome }),
    signUp: (outcome) => signUps.inc({ outcome }),
    refresh: (outcome) => refreshes.inc({ outcome }),
  };
}
