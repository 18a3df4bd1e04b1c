import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, type JWK } from "jose";
import type { Logger } from "@luna/kit";
import { activeKey, expiredKeys, nextKeyActivation, publishedKeys, type LifecycleOptions } from "../domain/key-lifecycle.js";
import { KeyEncryptionError, open, seal, type Kek } from "../domain/key-encryption.js";
import type { AuthStore, SigningKey, Tx } from "../data/store.js";

/** A JSON Web Key Set as served at `/.well-known/jwks.json`. */
export type Jwks = { keys: JWK[] };

export type KeyStoreOptions = LifecycleOptions & {
  /** How often each instance re-reads the keys and checks whether one is due (also picks up other replicas' keys). */
  checkIntervalMs: number;
};

type Loaded = { rows: SigningKey[]; loadedAt: number };

/**
 * Ed25519 signing keys kept in auth's database, private halves sealed with the key-encryption key. Every replica
 * reads the same rows; creation of a new key is serialised by an advisory lock. The newest activated key signs;
 * the JWKS lists pending, active and recently retired keys (see domain/key-lifecycle.ts).
 */
export class KeyStore {
  private loaded: Loaded | undefined;
  private decrypted = new Map<string, KeyObject>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: AuthStore,
    private readonly kek: Kek,
    private readonly opts: KeyStoreOptions,
    private readonly log: Logger,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  /** Creates the first key if there is none, publishes a successor when one is due, drops expired keys. */
  async rotateIfDue(): Promise<void> {
    await this.store.withKeyRotationLock(async (tx) => {
      const now = this.clock();
      const rows = await tx.signingKey.findMany();
      const activation = nextKeyActivation(rows, now, this.opts);
      if (activation) {
        const kid = await this.createKey(tx, activation);
        this.log.info({ kid, activatesAt: activation.toISOString() }, "created signing key");
      }
      const expired = expiredKeys(rows, now, this.opts).map((k) => k.kid);
      if (expired.length > 0) {
        await tx.signingKey.deleteMany({ where: { kid: { in: expired } } });
        this.log.info({ kids: expired }, "deleted expired signing keys");
      }
    });
    await this.reload();
  }

  /** The key that signs now, decrypted. Creates one at once if none can be used. */
  async signingKey(): Promise<{ kid: string; privateKey: KeyObject }> {
    const now = this.clock();
    let rows = await this.rows();
    let current = activeKey(rows, now);
    if (!current) {
      await this.rotateIfDue();
      rows = await this.rows();
      current = activeKey(rows, now);
    }
    if (!current) throw new Error("no signing key available");
    try {
      return { kid: current.kid, privateKey: this.decrypt(current) };
    } catch (err) {
      if (!(err instanceof KeyEncryptionError)) throw err;
      // The key-encryption key changed (or the row is damaged): sign with a new key rather than not at all. The old
      // public keys stay published, so tokens already issued keep verifying.
      this.log.error({ kid: current.kid, err: err.message }, "cannot decrypt the active signing key; creating a new one now");
      const kid = await this.store.withKeyRotationLock((tx) => this.createKey(tx, this.clock()));
      await this.reload();
      const fresh = (await this.rows()).find((k) => k.kid === kid)!;
      return { kid, privateKey: this.decrypt(fresh) };
    }
  }

  /** The public keys verifiers must know now. */
  async jwks(): Promise<Jwks> {
    const rows = await this.rows();
    return {
      keys: publishedKeys(rows, this.clock(), this.opts).map((k) => ({ ...(k.publicJwk as JWK), kid: k.kid, alg: "EdDSA", use: "sig" })),
    };
  }

  /** Starts the periodic check (rotation and reload); the timer does not keep the process alive. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      this.rotateIfDue().catch((err: unknown) => this.log.error({ err }, "signing key rotation check failed"));
    }, this.opts.checkIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  async reload(): Promise<void> {
    this.loaded = { rows: await this.store.listSigningKeys(), loadedAt: Date.now() };
  }

  private async rows(): Promise<SigningKey[]> {
    if (!this.loaded || Date.now() - this.loaded.loadedAt > this.opts.checkIntervalMs) await this.reload();
    return this.loaded!.rows;
  }

  private decrypt(row: SigningKey): KeyObject {
    let key = this.decrypted.get(row.kid);
    if (!key) {
      const der = open(this.kek, row.privateKeySealed, row.kid);
      key = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
      this.decrypted.set(row.kid, key);
    }
    return key;
  }

  private async createKey(tx: Tx, activatesAt: Date): Promise<string> {
    const { privateKey } = generateKeyPairSync("ed25519");
    const publicJwk = createPublicKey(privateKey).export({ format: "jwk" }) as JWK;
    // RFC 7638 thumbprint: a kid derived from the key itself, stable and collision-free.
    const kid = await calculateJwkThumbprint({ kty: publicJwk.kty!, crv: publicJwk.crv!, x: publicJwk.x! });
    const der = privateKey.export({ format: "der", type: "pkcs8" });
    await tx.signingKey.create({
      data: { kid, algorithm: "EdDSA", publicJwk: { kty: "OKP", crv: "Ed25519", x: publicJwk.x! }, privateKeySealed: new Uint8Array(seal(this.kek, der, kid)), createdAt: this.clock(), activatesAt },
    });
    return kid;
  }
}
