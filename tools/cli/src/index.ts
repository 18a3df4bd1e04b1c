/**
 * @luna/cli — the `luna` command-line client. `run(argv, io)` runs one command in-process (tests, embedding);
 * the `luna` bin runs it for the real process.
 */
export { run, COMMANDS } from "./cli.js";
export { nodeIo, type Io, type Input, type Output } from "./io.js";
export { CredentialStore, configDir, CREDENTIALS_FILE, type StoredSession } from "./credentials.js";
export { createClients, type Clients, type ClientOptions } from "./client.js";
export { loadSettings, DEFAULT_URL, type Settings } from "./context.js";
export { EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED } from "./errors.js";
export { VERSION } from "./version.js";
