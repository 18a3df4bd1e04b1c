/** A FIFO async mutex: one ComfyUI runs one job at a time even when a worker serves several pools. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  /** Resolves with the release function once the lock is held. */
  lock(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => held);
    return prev.then(() => release);
  }

  /** Resolves once every holder and waiter at the time of the call has released the lock (it takes nothing). */
  idle(): Promise<void> {
    return this.tail;
  }
}
