// Timing shared by the kernel benches: tinybench options per device and the median of a task.
// Every timed function awaits its GPU work, so a median is a completed pass, not recorded commands.

import { Bench } from 'tinybench';

export type BenchOpts = ReturnType<typeof benchOptions>;

/** Iteration counts; a software adapter takes seconds per pass, so it gets a fixed few. */
export function benchOptions(quick: boolean, software: boolean) {
  if (quick) return { iterations: 2, time: 100, warmupIterations: 1, warmupTime: 0 };
  if (software) return { iterations: 3, time: 0, warmupIterations: 1, warmupTime: 0 };
  return { iterations: 5, time: 1000, warmupIterations: 2, warmupTime: 100 };
}

/** Median ms of a completed tinybench task. */
export function medianMs(task: Bench['tasks'][number]): { ms: number; samples: number } {
  const r = task.result;
  if (r.state !== 'completed') throw new Error(`bench ${task.name} did not complete (${r.state})${r.state === 'errored' ? `: ${r.error.message}` : ''}`);
  return { ms: r.latency.p50, samples: r.latency.samplesCount };
}

export interface Hooks { beforeEach?: () => void | Promise<void>; afterEach?: () => void | Promise<void> }

/** Runs `fn` as one tinybench task and returns its median ms (hooks run untimed). */
export async function timeIt(name: string, opts: BenchOpts, fn: () => Promise<void>, hooks: Hooks = {}): Promise<number> {
  const bench = new Bench({ name, ...opts });
  bench.add(name, fn, hooks);
  await bench.run();
  return medianMs(bench.tasks[0]).ms;
}
