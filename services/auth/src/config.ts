import * as z from "zod";
import { bool, duration, eventRetentionConfigSchema } from "@luna/kit";

const int = (def: number, min: number, max: number) => z.coerce.number().int().min(min).max(max).default(def);

/**
 * Auth's environment variables (validated once in main.ts by the kit's loadConfig). Durations take the kit's syntax
 * (250ms, 30s, 5m, 1h). Defaults are the documented production defaults.
 */
export const authConfigSchema = z.object({
  /** `iss` of issued access tokens; the same variable configures every service's verifier (kit runtime). */
  LUNA_JWT_ISSUER: z.string().min(1).default("luna-auth"),
  /** `aud` of issued access tokens (also read by the kit runtime's verifier). */
  LUNA_JWT_AUDIENCE: z.string().min(1).default("luna"),
  /**
   * Access-token lifetime (short). A deleted, disabled or signed-out-everywhere account's tokens are refused sooner,
   * within LUNA_REVOCATION_CHECK_INTERVAL (kit); a plain sign-out leaves its access token valid at most this long.
   */
  AUTH_ACCESS_TOKEN_TTL: duration("15m"),
  /** Refresh-token lifetime; each refresh issues a new one with a fresh lifetime (sliding), up to the session's end. */
  AUTH_REFRESH_TOKEN_TTL: duration("720h"),
  /** Absolute session lifetime: after this, sign in again whatever the refreshes (90 days). */
  AUTH_SESSION_MAX_LIFETIME: duration("2160h"),
  /** How long after rotation a refresh token is still accepted (honest retry, racing tabs); 0s disables. */
  AUTH_REFRESH_GRACE: duration("30s"),
  /** How long a signing key signs before the next one takes over. */
  AUTH_KEY_ROTATION_INTERVAL: duration("720h"),
  /** How long a new key is in the JWKS before it signs (≥ the JWKS cache time of every verifier, e.g. Envoy's). */
  AUTH_KEY_PREPUBLISH: duration("1h"),
  /** How often each replica re-reads the keys and rotates when due. */
  AUTH_KEY_CHECK_INTERVAL: duration("1m"),
  /** Clock skew verifiers allow; a retired key stays published for access-token TTL + this. */
  AUTH_CLOCK_SKEW: duration("60s"),
  /** `Cache-Control: max-age` of the JWKS response. */
  AUTH_JWKS_MAX_AGE: duration("5m"),
  /**
   * 32-byte key (base64 or 64 hex) that encrypts signing keys at rest (AES-256-GCM). Unset: a built-in development
   * key is used and a warning logged; always set it in production (a Kubernetes Secret).
   */
  AUTH_KEY_ENCRYPTION_KEY: z.string().optional(),
  /** Allow sign-up without an invite code. */
  AUTH_OPEN_SIGNUP: bool(false),
  /** argon2id memory in KiB (floor 19456 = 19 MiB, OWASP). */
  AUTH_ARGON2_MEMORY_KIB: int(19_456, 19_456, 4_194_304),
  /** argon2id iterations (floor 2). */
  AUTH_ARGON2_ITERATIONS: int(2, 2, 100),
  /** argon2id lanes (1 = OWASP's recommendation; more changes the hash). */
  AUTH_ARGON2_PARALLELISM: int(1, 1, 16),
  /** Concurrent argon2 computations per process (each holds its memory and a libuv pool thread). */
  AUTH_ARGON2_MAX_CONCURRENCY: int(2, 1, 64),
  /** Shortest password accepted (floor 8). */
  AUTH_PASSWORD_MIN_LENGTH: int(8, 8, 128),
  /** Longest password accepted (bounds hashing work per request). */
  AUTH_PASSWORD_MAX_LENGTH: int(256, 64, 1024),
  /** Failed sign-ins per account in any sliding hour before the account refuses attempts (at most 100). */
  AUTH_SIGNIN_ACCOUNT_MAX_FAILURES: int(100, 1, 100),
  /** Consecutive failures before the progressive delay starts. */
  AUTH_SIGNIN_FREE_FAILURES: int(5, 1, 100),
  /** First progressive delay; doubles with each further failure. */
  AUTH_SIGNIN_BASE_DELAY: duration("1s"),
  /** Longest progressive delay. */
  AUTH_SIGNIN_MAX_DELAY: duration("60s"),
  /** Failed sign-ins per client IP per window. */
  AUTH_SIGNIN_IP_MAX_FAILURES: int(300, 1, 1_000_000),
  AUTH_SIGNIN_IP_WINDOW: duration("1h"),
  /** Invite redemption attempts (failed ones) per client IP per window. */
  AUTH_INVITE_IP_MAX_ATTEMPTS: int(20, 1, 1_000_000),
  AUTH_INVITE_IP_WINDOW: duration("1h"),
  /** First admin, created on first start when no account has this email. */
  AUTH_ADMIN_EMAIL: z.string().optional(),
  /** Its password; unset: a random one is generated and printed once to the log. */
  AUTH_ADMIN_PASSWORD: z.string().optional(),
  /** Active personal API keys per account (CreateApiKey refuses more). */
  AUTH_API_KEY_MAX_ACTIVE: int(100, 1, 10_000),
  /**
   * How long a key's revocation stays in the revocation list: at least every service's LUNA_API_KEY_CACHE_TTL (the
   * longest a replica trusts an earlier answer for the key), plus clock skew.
   */
  AUTH_API_KEY_REVOCATION_TTL: duration("10m"),
  /** `last_used_at` of a key is written at most this often. */
  AUTH_API_KEY_TOUCH_INTERVAL: duration("1m"),
  /** LUNA_OUTBOX_RETAIN, LUNA_INBOX_RETAIN, LUNA_EVENT_PRUNE_INTERVAL (kit: event tables' retention). */
  ...eventRetentionConfigSchema.shape,
});

export type AuthConfig = z.infer<typeof authConfigSchema>;
