import { PassThrough, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { CliError, UsageError } from "./errors.js";
import type { Io } from "./io.js";
import { passwordFrom, valueOrPrompt } from "./prompt.js";

/** A fake terminal: keys typed into stdin, what is shown collected from stderr. */
function terminal(tty = true) {
  const stdin = Object.assign(new PassThrough(), { isTTY: tty, rawModes: [] as boolean[], setRawMode(raw: boolean) {
    stdin.rawModes.push(raw);
    return stdin;
  } });
  let shown = "";
  const stderr = new Writable({ write(chunk, _enc, cb) {
    shown += chunk.toString();
    cb();
  } });
  const io: Io = { env: {}, stdin, stdout: new PassThrough(), stderr, onInterrupt: () => () => {} };
  return { io, stdin, shown: () => shown };
}

describe("prompts", () => {
  it("takes a flag's value without asking", async () => {
    const t = terminal(false);
    expect(await valueOrPrompt(t.io, "ann@x.io", "email", "Email: ", "login")).toBe("ann@x.io");
  });

  it("asks on a terminal, and names the flag when there is none", async () => {
    const t = terminal();
    const answer = valueOrPrompt(t.io, undefined, "email", "Email: ", "login");
    t.stdin.write("  ann@x.io \r");
    expect(await answer).toBe("ann@x.io");
    expect(t.shown()).toContain("Email: ");
    const piped = terminal(false);
    await expect(valueOrPrompt(piped.io, undefined, "email", "Email: ", "login")).rejects.toThrow(UsageError);
    await expect(valueOrPrompt(piped.io, undefined, "email", "Email: ", "login")).rejects.toThrow(/missing --email \(stdin is not a terminal/);
  });

  it("reads a password without echoing it, with backspace, and twice to confirm", async () => {
    const t = terminal();
    const pw = passwordFrom(t.io, false, "signup", true);
    t.stdin.write("hunter2x\u007f3\r");
    await new Promise((r) => setImmediate(r));
    t.stdin.write("hunter23\r");
    expect(await pw).toBe("hunter23");
    expect(t.shown()).toBe("Password: \nRepeat password: \n");
    expect(t.stdin.rawModes).toEqual([true, false, true, false]); // the terminal is left as it was found
  });

  it("refuses a mismatched confirmation and gives up on Ctrl-C", async () => {
    const t = terminal();
    const pw = passwordFrom(t.io, false, "signup", true);
    t.stdin.write("first-password\r");
    await new Promise((r) => setImmediate(r));
    t.stdin.write("other-password\r");
    await expect(pw).rejects.toThrow(new CliError("the passwords do not match"));
    const c = terminal();
    const cancelled = passwordFrom(c.io, false, "login");
    c.stdin.write("abc\u0003");
    await expect(cancelled).rejects.toThrow(new CliError("cancelled"));
  });

  it("refuses a new password that is too short before asking to repeat it", async () => {
    const t = terminal();
    const pw = passwordFrom(t.io, false, "signup", true);
    t.stdin.write("short\r");
    await expect(pw).rejects.toThrow(new CliError("the password must be at least 8 characters"));
    expect(t.shown()).toBe("Password: \n");
  });

  it("reads --password-stdin from the first line of stdin", async () => {
    const t = terminal(false);
    t.stdin.end("s3cret-pass\nrest\n");
    expect(await passwordFrom(t.io, true, "login")).toBe("s3cret-pass");
    const empty = terminal(false);
    empty.stdin.end("");
    await expect(passwordFrom(empty.io, true, "login")).rejects.toThrow(/no password on stdin/);
    await expect(passwordFrom(terminal(false).io, false, "login")).rejects.toThrow(/pass the password with --password-stdin/);
  });
});
