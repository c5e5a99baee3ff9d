// Bounded waiting: every wait in the harness has a deadline, every batch of clients a concurrency cap.

/** Reject with a labelled error if `promise` does not settle within `ms`. */
export function within(ms, promise, label) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Run `fn(item, index)` over `items`, at most `limit` at a time; resolves with the results in order. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Counts arrivals up to `expected`: `hit()` once per arrival, `done` resolves when all have come.
 * `wait(ms)` resolves with the number that came, whether or not all did by then.
 */
export class Countdown {
  constructor(expected) {
    this.expected = expected;
    this.arrived = 0;
    this.done = new Promise((resolve) => {
      this.resolve = resolve;
    });
    if (expected === 0) this.resolve();
  }

  hit() {
    this.arrived++;
    if (this.arrived === this.expected) this.resolve();
  }

  async wait(ms) {
    let timer;
    await Promise.race([this.done, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
    clearTimeout(timer);
    return this.arrived;
  }
}
