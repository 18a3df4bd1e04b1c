import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { configDir, CredentialStore, serverKey, type StoredSession } from "./credentials.js";

const root = mkdtempSync(join(tmpdir(), "luna-cli-creds-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const session: StoredSession = { accessToken: "a", accessTokenExpiresAt: 1, refreshToken: "r", refreshTokenExpiresAt: 2, userId: "u",
  email: "ann@x.io", role: "user" };

describe("credentials store", () => {
  it("keeps one session per server in a 0600 file inside a 0700 dir", () => {
    const store = new CredentialStore(join(root, "a", "luna"));
    store.set("http://one:8080", session);
    store.set("http://two:8080", { ...session, email: "bob@x.io" });
    expect(statSync(store.path).mode & 0o777).toBe(0o600);
    expect(statSync(store.dir).mode & 0o777).toBe(0o700);
    expect(store.get("http://one:8080")?.email).toBe("ann@x.io");
    expect(store.get("http://two:8080")?.email).toBe("bob@x.io");
    expect(store.delete("http://one:8080")).toBe(true);
    expect(store.delete("http://one:8080")).toBe(false);
    expect(store.get("http://one:8080")).toBeUndefined();
  });

  it("finds a session under another spelling of the same server, and keeps one per server", () => {
    expect(serverKey("http://LOCALHOST:8080/")).toBe(serverKey("http://127.0.0.1:8080"));
    expect(serverKey("http://[::1]:8080")).toBe(serverKey("http://localhost:8080"));
    expect(serverKey("http://localhost:8080")).not.toBe(serverKey("http://localhost:8081"));
    expect(serverKey("https://localhost:8080")).not.toBe(serverKey("http://localhost:8080"));
    expect(serverKey("http://10.0.0.1:8080")).not.toBe(serverKey("http://localhost:8080"));
    const store = new CredentialStore(join(root, "aliases"));
    store.set("http://localhost:8080", session);
    expect(store.get("http://127.0.0.1:8080")?.email).toBe("ann@x.io");
    expect(store.get("http://10.0.0.1:8080")).toBeUndefined();
    store.set("http://127.0.0.1:8080", { ...session, email: "bob@x.io" });
    expect(store.servers()).toEqual(["http://127.0.0.1:8080"]);
    expect(store.delete("http://localhost:8080")).toBe(true);
    expect(store.servers()).toEqual([]);
  });

  it("tightens a file someone made readable by others when it writes it", () => {
    const store = new CredentialStore(join(root, "b"));
    store.set("http://one", session);
    chmodSync(store.path, 0o644);
    store.set("http://one", { ...session, accessToken: "new" });
    expect(statSync(store.path).mode & 0o777).toBe(0o600);
  });

  it("removes the file with its last session", () => {
    const store = new CredentialStore(join(root, "c"));
    store.set("http://one", session);
    store.delete("http://one");
    expect(() => statSync(store.path)).toThrow();
  });

  it("explains a damaged file instead of crashing", () => {
    const store = new CredentialStore(join(root, "d"));
    store.set("http://one", session);
    writeFileSync(store.path, "{not json");
    expect(() => store.get("http://one")).toThrow(/cannot read .*credentials\.json: .*\(delete it and sign in again\)/);
    writeFileSync(store.path, "[]");
    expect(() => store.get("http://one")).toThrow(/is not a Luna credentials file/);
    expect(readFileSync(store.path, "utf8")).toBe("[]"); // left for the person to look at
  });

  it("finds the config dir: LUNA_CONFIG_DIR, else XDG_CONFIG_HOME/luna, else ~/.config/luna", () => {
    expect(configDir({ LUNA_CONFIG_DIR: "/x", XDG_CONFIG_HOME: "/y", HOME: "/h" })).toBe("/x");
    expect(configDir({ XDG_CONFIG_HOME: "/y", HOME: "/h" })).toBe("/y/luna");
    expect(configDir({ HOME: "/h" })).toBe("/h/.config/luna");
  });
});
