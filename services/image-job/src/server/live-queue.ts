// A small bounded async queue between a NATS subscription callback and a streaming handler.

export class LiveQueue<T> {
  private items: T[] = [];
  private waiter: (() => void) | undefined;

  constructor(private readonly max: number) {}

  /** Adds an item; when full, the oldest is dropped (live messages are superseded by newer ones). */
  push(item: T): void {
    this.items.push(item);
    if (this.items.length > this.max) this.items.shift();
    this.waiter?.();
  }

  /** The next item, or undefined after `timeoutMs` or when `signal` aborts. */
  async next(timeoutMs: number, signal: AbortSignal): Promise<T | undefined> {
    if (this.items.length > 0) return this.items.shift();
    if (signal.aborted) return undefined;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.waiter = undefined;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener("abort", done, { once: true });
      this.waiter = done;
    });
    return this.items.shift();
  }
}
