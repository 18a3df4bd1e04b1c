// Compares the models of a schema.prisma with a migrated Postgres database, so a hand-written or edited migration
// that drifts from the schema fails a test instead of failing at run time.
import pg from "pg";
import { getDatamodel, readSchemaFiles, type DmmfDatamodel, type DmmfField, type DmmfIndex } from "./prisma-schema.js";

export interface SchemaCheckOptions {
  /** schema.prisma, or a folder of *.prisma files. */
  schemaPath: string;
  /** The migrated database; `?schema=name` selects the default schema (public otherwise). */
  databaseUrl: string;
  /** Database tables that are intentionally not modelled (`_prisma_migrations` is always ignored). */
  ignoreTables?: string[];
  /** Index names present in the database on purpose but not in the schema (e.g. partial or expression indexes). */
  ignoreIndexes?: string[];
}

interface DbColumn {
  type: string;
  notNull: boolean;
}

interface DbIndex {
  name: string;
  primary: boolean;
  unique: boolean;
  /** Column names in index order, "(expression)" for expression parts, with " DESC" for descending ones. */
  columns: string[];
  partial: boolean;
}

interface DbTable {
  columns: Map<string, DbColumn>;
  indexes: DbIndex[];
}

/** Postgres type for a Prisma scalar without @db.* (Prisma's PostgreSQL defaults). */
const DEFAULT_TYPES: Record<string, string> = {
  String: "text",
  Boolean: "boolean",
  Int: "integer",
  BigInt: "bigint",
  Float: "double precision",
  Decimal: "numeric(65,30)",
  DateTime: "timestamp(3)",
  Json: "jsonb",
  Bytes: "bytea",
};

/** Canonical type for a @db.* native type (timestamps/times default to precision 6, as in Postgres). */
function nativeType(name: string, args: string[]): string {
  const [a, b] = args;
  switch (name) {
    case "Text": return "text";
    case "VarChar": return a ? `varchar(${a})` : "varchar";
    case "Char": return `char(${a ?? 1})`;
    case "Bit": return `bit(${a ?? 1})`;
    case "VarBit": return a ? `varbit(${a})` : "varbit";
    case "Decimal": return a ? `numeric(${a},${b ?? 0})` : "numeric";
    case "Timestamp": return `timestamp(${a ?? 6})`;
    case "Timestamptz": return `timestamptz(${a ?? 6})`;
    case "Time": return `time(${a ?? 6})`;
    case "Timetz": return `timetz(${a ?? 6})`;
    case "DoublePrecision": return "double precision";
    case "JsonB": return "jsonb";
    case "ByteA": return "bytea";
    default: return name.toLowerCase(); // Uuid, Xml, Inet, Citext, Boolean, Integer, SmallInt, Oid, BigInt, Real, Money, Date, Json
  }
}

function expectedType(field: DmmfField, enumDbNames: Map<string, string>): string {
  let base: string;
  if (field.kind === "enum") base = `enum ${enumDbNames.get(field.type) ?? field.type}`;
  else if (field.nativeType) base = nativeType(field.nativeType[0], field.nativeType[1]);
  else base = DEFAULT_TYPES[field.type] ?? field.type.toLowerCase();
  return field.isList ? `${base}[]` : base;
}

/** Canonical form of `format_type()` output, comparable with expectedType(). */
export function canonicalDbType(formatType: string, enumName: string | null, isArray: boolean): string {
  if (enumName) return `enum ${enumName}${isArray ? "[]" : ""}`;
  let t = formatType;
  let suffix = "";
  if (t.endsWith("[]")) {
    t = t.slice(0, -2);
    suffix = "[]";
  }
  const time = /^(timestamp|time)(?:\((\d+)\))? (with|without) time zone$/.exec(t);
  if (time) {
    t = `${time[1]}${time[3] === "with" ? "tz" : ""}(${time[2] ?? 6})`;
  } else {
    t = t
      .replace(/^character varying/, "varchar")
      .replace(/^bit varying/, "varbit")
      .replace(/^character\b/, "char");
    if (t === "char" || t === "bit") t = `${t}(1)`;
  }
  return t + suffix;
}

function describeField(field: DmmfField): string {
  const native = field.nativeType ? ` @db.${field.nativeType[0]}${field.nativeType[1].length ? `(${field.nativeType[1].join(", ")})` : ""}` : "";
  return `${field.type}${field.isList ? "[]" : field.isRequired ? "" : "?"}${native}`;
}

async function introspect(databaseUrl: string, schemas: string[]): Promise<Map<string, DbTable>> {
  const url = new URL(databaseUrl);
  url.searchParams.delete("schema");
  const client = new pg.Client({ connectionString: url.toString() });
  client.on("error", () => {});
  await client.connect();
  try {
    const tables = new Map<string, DbTable>();
    const key = (schema: string, table: string) => `${schema}.${table}`;
    const t = await client.query<{ schema: string; table: string }>(
      `SELECT n.nspname AS schema, c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')`,
      [schemas],
    );
    for (const row of t.rows) tables.set(key(row.schema, row.table), { columns: new Map(), indexes: [] });
    const cols = await client.query<{ schema: string; table: string; column: string; not_null: boolean; type: string; enum_name: string | null; is_array: boolean }>(
      `SELECT n.nspname AS schema, c.relname AS table, a.attname AS column, a.attnotnull AS not_null,
              format_type(a.atttypid, a.atttypmod) AS type, t.typcategory = 'A' AS is_array,
              CASE WHEN t.typtype = 'e' THEN t.typname WHEN et.typtype = 'e' THEN et.typname END AS enum_name
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_type et ON t.typcategory = 'A' AND et.oid = t.typelem
       WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped`,
      [schemas],
    );
    for (const row of cols.rows) {
      tables.get(key(row.schema, row.table))?.columns.set(row.column, {
        type: canonicalDbType(row.type, row.enum_name, row.is_array),
        notNull: row.not_null,
      });
    }
    const idx = await client.query<{ schema: string; table: string; name: string; primary: boolean; unique: boolean; partial: boolean; columns: (string | null)[]; descending: boolean[] }>(
      `SELECT n.nspname AS schema, c.relname AS table, i.relname AS name, x.indisprimary AS primary,
              x.indisunique AS unique, x.indpred IS NOT NULL AS partial,
              to_json(ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                            LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                            WHERE k.ord <= x.indnkeyatts ORDER BY k.ord)) AS columns,
              to_json(ARRAY(SELECT (o.opt & 1) = 1 FROM unnest(x.indoption::int2[]) WITH ORDINALITY o(opt, ord)
                            ORDER BY o.ord)) AS descending
       FROM pg_index x
       JOIN pg_class c ON c.oid = x.indrelid
       JOIN pg_class i ON i.oid = x.indexrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')`,
      [schemas],
    );
    for (const row of idx.rows) {
      tables.get(key(row.schema, row.table))?.indexes.push({
        name: row.name,
        primary: row.primary,
        unique: row.unique,
        partial: row.partial,
        columns: row.columns.map((c, i) => `${c ?? "(expression)"}${row.descending[i] ? " DESC" : ""}`),
      });
    }
    return tables;
  } finally {
    await client.end().catch(() => {});
  }
}

/** Lists every difference between the schema's models and the database (empty = they match). */
export async function schemaDifferences(opts: SchemaCheckOptions): Promise<string[]> {
  const datamodel: DmmfDatamodel = getDatamodel(readSchemaFiles(opts.schemaPath));
  const defaultSchema = new URL(opts.databaseUrl).searchParams.get("schema") || "public";
  const schemas = [...new Set([defaultSchema, ...datamodel.models.map((m) => m.schema ?? defaultSchema)])];
  const db = await introspect(opts.databaseUrl, schemas);
  const enumDbNames = new Map(datamodel.enums.map((e) => [e.name, e.dbName ?? e.name]));
  const ignoredTables = new Set(["_prisma_migrations", ...(opts.ignoreTables ?? [])]);
  const ignoredIndexes = new Set(opts.ignoreIndexes ?? []);
  const diffs: string[] = [];
  const modelled = new Set<string>();

  for (const model of datamodel.models) {
    const schema = model.schema ?? defaultSchema;
    const tableName = model.dbName ?? model.name;
    const label = schema === defaultSchema ? tableName : `${schema}.${tableName}`;
    modelled.add(`${schema}.${tableName}`);
    const table = db.get(`${schema}.${tableName}`);
    if (!table) {
      diffs.push(`missing table ${label} (model ${model.name})`);
      continue;
    }
    const fieldColumns = new Map<string, string>(); // field name -> column name
    for (const field of model.fields) {
      if (field.kind !== "scalar" && field.kind !== "enum") continue; // relation fields have no column
      const columnName = field.dbName ?? field.name;
      fieldColumns.set(field.name, columnName);
      const column = table.columns.get(columnName);
      const where = `${label}.${columnName} (${model.name}.${field.name} ${describeField(field)})`;
      if (!column) {
        diffs.push(`missing column ${where}`);
        continue;
      }
      const want = expectedType(field, enumDbNames);
      if (column.type !== want) diffs.push(`wrong type for ${where}: database has ${column.type}, schema expects ${want}`);
      // Prisma creates list columns without NOT NULL and never makes them optional, so either form is accepted.
      if (!field.isList && column.notNull !== field.isRequired) {
        diffs.push(
          `wrong nullability for ${where}: database column is ${column.notNull ? "NOT NULL" : "nullable"}, ` +
            `schema says ${field.isRequired ? "required" : "optional"}`,
        );
      }
    }
    const known = new Set(fieldColumns.values());
    for (const columnName of table.columns.keys()) {
      if (!known.has(columnName)) diffs.push(`extra column ${label}.${columnName}: not in model ${model.name}`);
    }
    diffs.push(...compareIndexes(label, model.name, datamodel.indexes.filter((i) => i.model === model.name), fieldColumns, table, ignoredIndexes));
  }

  for (const key of db.keys()) {
    const [schema, table] = [key.slice(0, key.indexOf(".")), key.slice(key.indexOf(".") + 1)];
    if (!modelled.has(key) && !ignoredTables.has(table) && !ignoredTables.has(key)) {
      diffs.push(`extra table ${schema === defaultSchema ? table : key}: no model maps to it`);
    }
  }
  return diffs;
}

function compareIndexes(
  label: string,
  modelName: string,
  expected: DmmfIndex[],
  fieldColumns: Map<string, string>,
  table: DbTable,
  ignored: Set<string>,
): string[] {
  const diffs: string[] = [];
  const kindOf = (i: { primary: boolean; unique: boolean }) => (i.primary ? "primary key" : i.unique ? "unique index" : "index");
  const remaining = table.indexes.filter((i) => !ignored.has(i.name));
  for (const index of expected) {
    if (index.type === "fulltext") continue; // MySQL only
    const want = {
      primary: index.type === "id",
      unique: index.type === "id" || index.type === "unique",
      columns: index.fields.map((f) => `${fieldColumns.get(f.name) ?? f.name}${f.sortOrder === "desc" ? " DESC" : ""}`),
    };
    const described = `${kindOf(want)} on ${label} (${want.columns.join(", ")})`;
    const match = remaining.findIndex(
      (i) => i.primary === want.primary && i.unique === want.unique && !i.partial && i.columns.join(",") === want.columns.join(","),
    );
    if (match < 0) {
      diffs.push(`missing ${described} (model ${modelName})`);
      continue;
    }
    const found = remaining.splice(match, 1)[0]!;
    if (index.dbName && found.name !== index.dbName) {
      diffs.push(`${described} is named ${found.name} in the database, schema maps it to ${index.dbName}`);
    }
  }
  for (const extra of remaining) {
    diffs.push(`extra ${kindOf(extra)} ${extra.name} on ${label} (${extra.columns.join(", ")})${extra.partial ? " WHERE …" : ""}: not in model ${modelName}`);
  }
  return diffs;
}

/**
 * Throws an Error listing every difference between the models in `schemaPath` and the migrated database: missing
 * or extra tables and columns, column types (Prisma scalars and @db.* native types), nullability, primary keys,
 * unique constraints/indexes and @@index indexes (@@map/@map respected).
 */
export async function assertSchemaMatchesDatabase(opts: SchemaCheckOptions): Promise<void> {
  const diffs = await schemaDifferences(opts);
  if (diffs.length > 0) {
    throw new Error(`${opts.schemaPath} does not match the database (${diffs.length} difference(s)):\n${diffs.map((d) => `- ${d}`).join("\n")}`);
  }
}
