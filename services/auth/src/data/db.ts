import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "../generated/prisma/client.js";

export type Db = PrismaClient;

/** Prisma over node-postgres (no native engine at run time). */
export function createDb(databaseUrl: string, opts: { maxConnections?: number } = {}): Db {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl, max: opts.maxConnections ?? 10 }) });
}
