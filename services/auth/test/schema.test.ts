import { afterAll, beforeAll, describe, it } from "vitest";
import { assertSchemaMatchesDatabase, createTestDatabase, type TestDatabase } from "@luna/kit/testing";
import { migrationsDir, schemaPath } from "./harness.js";

describe("migrations", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase({ migrationsDir, prefix: "auth_schema" });
  });
  afterAll(() => database?.drop());

  it("create exactly the tables, columns and indexes of schema.prisma", async () => {
    await assertSchemaMatchesDatabase({ schemaPath, databaseUrl: database.url, ignoreIndexes: ["outbox_events_unpublished_seq_idx"] });
  });
});
