import type { Io } from "../io.js";

/** Everything on stdin, as text (for `luna ask -`). */
export async function readAll(io: Io): Promise<string> {
  let data = "";
  io.stdin.setEncoding("utf8");
  for await (const chunk of io.stdin) data += chunk as string;
  return data;
}
