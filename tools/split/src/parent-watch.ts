// Preloaded into every process the launcher starts (`node --import`). The launcher holds the write end of each
// child's stdin; when the launcher dies without stopping its services (SIGKILL, a crashed test runner), the OS closes
// that pipe and the service stops itself exactly as on SIGTERM, instead of living on as an orphan holding its ports.
// A service started any other way (a terminal, a container) has no such pipe and never loads this file.
process.stdin.on("end", () => process.kill(process.pid, "SIGTERM"));
process.stdin.on("error", () => process.kill(process.pid, "SIGTERM"));
process.stdin.resume();
// Waiting for EOF must not keep a process alive that is otherwise done.
(process.stdin as unknown as { unref?: () => void }).unref?.();
export {};
