import { describe, expect, it } from "vitest";
import pg from "pg";
import { createPgPool } from "../../src/pg.js";
import { createTestDatabase } from "../../src/testing/index.js";

function recorder() {
  const warnings: string[] = [];
  return { warnings, log: { warn: (_obj: object, msg?: string) => void warnings.push(msg ?? "") } };
}

async function terminate(url: string, pid: number): Promise<void> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query("SELECT pg_terminate_backend($1)", [pid]);
  } finally {
    await admin.end();
  }
}

const waitFor = async (cond: () => boolean) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
};

describe("createPgPool", () => {
  it("survives the server ending a connection that is checked out between queries", async () => {
    const db = await createTestDatabase({ prefix: "kitpg" });
    const { warnings, log } = recorder();
    const pool = createPgPool({ url: db.url, max: 2, name: "kit-test", log });
    const client = await pool.connect();
    try {
      const pid = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      await terminate(db.url, pid); // without a listener on the client this 'error' event crashes the process
      await waitFor(() => warnings.length > 0);
      // node-postgres may report the loss twice (the server's FATAL message, then the closed socket).
      expect(new Set(warnings)).toEqual(new Set(["a Postgres connection in use failed"]));
    } finally {
      client.release(true);
    }
    try {
      expect((await pool.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one).toBe(1);
    } finally {
      await pool.end();
      await db.drop();
    }
  });

  it("survives the server ending an idle connection, and replaces it", async () => {
    const db = await createTestDatabase({ prefix: "kitpg" });
    const { warnings, log } = recorder();
    const pool = createPgPool({ url: db.url, max: 1, name: "kit-test", log });
    try {
      const pid = (await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      await terminate(db.url, pid);
      await waitFor(() => warnings.length > 0);
      expect(warnings[0]).toBe("an idle Postgres connection failed; it is replaced");
      const next = (await pool.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      expect(next).not.toBe(pid);
    } finally {
      await pool.end();
      await db.drop();
    }
  });

  it("names its connections and sets the idle-in-transaction timeout when asked", async () => {
    const db = await createTestDatabase({ prefix: "kitpg" });
    const pool = createPgPool({ url: db.url, max: 1, name: "kit-test", log: recorder().log, idleInTransactionTimeoutMs: 1500 });
    try {
      const r = await pool.query<{ app: string; t: string }>(
        "SELECT current_setting('application_name') AS app, current_setting('idle_in_transaction_session_timeout') AS t");
      expect(r.rows[0]).toEqual({ app: "kit-test", t: "1500ms" });
    } finally {
      await pool.end();
      await db.drop();
    }
  });
});
