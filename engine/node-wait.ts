// Waiting for the GPU in Node without spinning a core.
//
// Dawn's Node binding completes its promises (queue.onSubmittedWorkDone, buffer.mapAsync) by
// re-queuing an event-processing tick with the global setImmediate for as long as one is pending:
// a busy loop on one core. On a software adapter that core is one lavapipe's worker threads
// need: on the 2-core CI machine the bench UNet's forward + backward took 1.68 s with the loop
// spinning and 0.98 s without it (the GPU work itself is unchanged). So while the engine awaits
// such a promise, the binding's ticks after the first few (short waits stay fast) run on 1-ms
// timers instead. The binding looks setImmediate up on each tick, which is what this relies on;
// if a later binding stops doing so, nothing breaks: the wait is then as before.

const FAST_TICKS = 32;

let depth = 0;
let original: typeof setImmediate | null = null;

function install(): void {
  const real = globalThis.setImmediate;
  original = real;
  let fast = 0;
  const gentle = ((fn: (...a: unknown[]) => void, ...args: unknown[]) =>
    fast++ < FAST_TICKS ? real(fn, ...args) : setTimeout(fn, 1, ...args)) as unknown as typeof setImmediate;
  globalThis.setImmediate = gentle;
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
