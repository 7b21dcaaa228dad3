// Waiting for the GPU in Node without spinning a core.
//
// Dawn's Node binding completes its promises (queue.onSubmittedWorkDone, buffer.mapAsync) by
// re-queuing an event-processing tick with the global setImmediate for as long as one is pending:
// a busy loop on one core. On a software adapter that core is one lavapipe's worker threads
// need: on the 2-core CI machine the bench UNet's forward + backward took 1.68 s with the loop
// spinning and 0.98 s without it (the GPU work itself is unchanged). So while the engine awaits
// such a promise, the binding's ticks sleep first: 0.2 ms naps (Atomics.wait, no CPU) for the
// first 5 ms, which keep short waits short, then 1-ms timers. Measured on lavapipe (2 cores):
// a 2-ms convolution waited 2.9 ms with timers only and 2.0 ms with naps first; naps all along
// cost the long waits 8 % (each tick runs the binding's event processing).
//
// The binding looks setImmediate up on each tick, which is what this relies on; if a later
// binding stops doing so, nothing breaks: the wait is then as before.

const NAP_MS = 0.2;
const NAPS_FOR_MS = 5;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

let depth = 0;
let original: typeof setImmediate | null = null;

function install(): void {
  const real = globalThis.setImmediate;
  original = real;
  const start = performance.now();
  globalThis.setImmediate = ((fn: (...a: unknown[]) => void, ...args: unknown[]) => {
    if (performance.now() - start < NAPS_FOR_MS) {
      Atomics.wait(SLEEPER, 0, 0, NAP_MS);
      return real(fn, ...args);
    }
    return setTimeout(fn, 1, ...args);
  }) as unknown as typeof setImmediate;
}

/** Runs `work` (which awaits GPU promises) with the binding's polling slowed as described above. */
export async function gentleWait<T>(work: () => Promise<T>): Promise<T> {
  if (depth++ === 0) install();
  try {
    return await work();
  } finally {
    if (--depth === 0 && original) {
      globalThis.setImmediate = original;
      original = null;
    }
  }
}
