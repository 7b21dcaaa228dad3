// A pool of GPU buffers reused by size class, so that a training loop that frees and allocates
// the same activation sizes every step stops calling createBuffer after its first step.

/** Rounds a byte count up to its size class: 256 B granularity, then quarter-power-of-two steps (≤ 25% waste). */
export function sizeClass(bytes: number): number {
  const n = Math.max(bytes, 4);
  if (n <= 4096) return Math.ceil(n / 256) * 256;
  const p = 2 ** Math.floor(Math.log2(n));
  const step = p / 4;
  return Math.ceil(n / step) * step;
}

export interface MemoryStats {
  /** Bytes held by live tensors (by size class). */
  liveBytes: number;
  /** Bytes of freed buffers kept for reuse. */
  pooledBytes: number;
  /** Highest liveBytes seen since creation or the last resetPeak(). */
  peakLiveBytes: number;
  /** Highest liveBytes + pooledBytes seen: what the GPU actually had to hold. */
  peakTotalBytes: number;
  liveBuffers: number;
  pooledBuffers: number;
  /** createBuffer calls so far (a flat count over a loop means the pool is doing its job). */
  created: number;
  /** Allocations served from the pool. */
  reused: number;
}

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  private stats: MemoryStats = {
    liveBytes: 0, pooledBytes: 0, peakLiveBytes: 0, peakTotalBytes: 0,
    liveBuffers: 0, pooledBuffers: 0, created: 0, reused: 0,
  };

  constructor(private readonly create: (bytes: number) => GPUBuffer) {}

  acquire(bytes: number): GPUBuffer {
    const cls = sizeClass(bytes);
    const list = this.free.get(cls);
    let buffer = list?.pop();
    if (buffer) {
      this.stats.pooledBytes -= cls;
      this.stats.pooledBuffers--;
      this.stats.reused++;
    } else {
      buffer = this.create(cls);
      this.stats.created++;
    }
    this.stats.liveBytes += cls;
    this.stats.liveBuffers++;
    this.stats.peakLiveBytes = Math.max(this.stats.peakLiveBytes, this.stats.liveBytes);
    this.stats.peakTotalBytes = Math.max(this.stats.peakTotalBytes, this.stats.liveBytes + this.stats.pooledBytes);
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    const cls = buffer.size;
    let list = this.free.get(cls);
    if (!list) this.free.set(cls, (list = []));
    list.push(buffer);
    this.stats.liveBytes -= cls;
    this.stats.liveBuffers--;
    this.stats.pooledBytes += cls;
    this.stats.pooledBuffers++;
  }

  /** Destroys every pooled buffer. The caller must have submitted all work that may still use them. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.stats.pooledBytes = 0;
    this.stats.pooledBuffers = 0;
  }

  snapshot(): MemoryStats {
    return { ...this.stats };
  }

  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
    this.stats.peakTotalBytes = this.stats.liveBytes + this.stats.pooledBytes;
  }
}
