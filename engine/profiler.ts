// Per-dispatch GPU timing with timestamp queries, for finding where a model's time goes.
//
// While a profile is on, the device records each dispatch in a compute pass of its own whose
// beginning and end write timestamps (so batching into one pass is lost: profile to find hot
// ops, not to measure totals). Query slots are resolved into buffers as they fill, in command
// order, so one query set serves any number of dispatches; the buffers are read once, at stop.

const SLOTS = 2048; // timestamps per query set: 1024 dispatches

export interface ProfileEntry {
  /**
   * By op (default): the label up to the first '(' (shapes left out so calls group). By kernel:
   * the pipeline key (e.g. attention:dkv:32x64x4:d512:f32:mask-f32), which tells apart the
   * kernels one op runs. By label: the whole dispatch label, shapes included (which call).
   */
  op: string;
  calls: number;
  /** GPU time in milliseconds, summed over calls. */
  ms: number;
}

export type ProfileGrouping = 'op' | 'kernel' | 'label';

export class DispatchProfiler {
  private readonly querySet: GPUQuerySet;
  private used = 0;
  /** The group name (op or kernel key) of each dispatch in the unresolved slots. */
  private names: string[] = [];
  private resolved: { buffer: GPUBuffer; names: string[] }[] = [];

  constructor(private readonly gpu: GPUDevice, private readonly by: ProfileGrouping = 'op') {
    this.querySet = gpu.createQuerySet({ label: 'dispatch profiler', type: 'timestamp', count: SLOTS });
  }

  /** True when the query set is full and must be resolved before the next pass. */
  get full(): boolean { return this.used + 2 > SLOTS; }

  /** Timestamp writes for the pass of the dispatch named `label`. */
  next(label: string, key: string): GPUComputePassTimestampWrites {
    const i = this.used;
    this.used += 2;
    this.names.push(this.by === 'kernel' ? key : this.by === 'label' ? label : label.split('(')[0].trim());
    return { querySet: this.querySet, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 };
  }

  /** Records the resolve of the used slots into a new buffer (outside any pass). */
  resolve(encoder: GPUCommandEncoder): void {
    if (!this.used) return;
    const bytes = this.used * 8;
    const buffer = this.gpu.createBuffer({ label: 'profile timestamps', size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    encoder.resolveQuerySet(this.querySet, 0, this.used, buffer, 0);
    this.resolved.push({ buffer, names: this.names });
    this.used = 0;
    this.names = [];
  }

  /** Reads every resolved buffer (the caller has submitted and waited) and totals time per op. */
  async report(): Promise<ProfileEntry[]> {
    const byOp = new Map<string, ProfileEntry>();
    for (const { buffer, names } of this.resolved) {
      const staging = this.gpu.createBuffer({ size: buffer.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      const enc = this.gpu.createCommandEncoder();
      enc.copyBufferToBuffer(buffer, 0, staging, 0, buffer.size);
      this.gpu.queue.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(staging.getMappedRange().slice(0));
      staging.unmap();
      staging.destroy();
      buffer.destroy();
      names.forEach((op, k) => {
        const e = byOp.get(op) ?? { op, calls: 0, ms: 0 };
        const dt = t[2 * k + 1] > t[2 * k] ? Number(t[2 * k + 1] - t[2 * k]) / 1e6 : 0;
        e.calls++;
        e.ms += dt;
        byOp.set(op, e);
      });
    }
    this.resolved = [];
    this.querySet.destroy();
    return [...byOp.values()].sort((a, b) => b.ms - a.ms);
  }
}
