// JPEG encoding for the service client on worker threads: jpeg-js takes 0.1–0.4 s per 512 px
// image, which on the trainer's thread would stall sampling (that thread records the GPU work).
// Each batch is split over the workers; a worker that dies fails its tasks (the client then
// drops those samples as a failed request) and is replaced.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ImageBatch, sliceBatch } from '../types.js';
import type { EncodeReply, EncodeTask } from './encode-worker.js';

const WORKER_URL = new URL('./encode-worker.js', import.meta.url);

interface Slot { worker: Worker; pending: Map<number, { resolve: (b: string[]) => void; reject: (e: Error) => void }> }

export class JpegEncoder {
  private readonly slots: Slot[] = [];
  private next = 0;
  private taskId = 0;
  private closed = false;

  constructor(workers = Math.min(2, availableParallelism())) {
    for (let i = 0; i < Math.max(1, workers); i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const slot: Slot = { worker: new Worker(WORKER_URL), pending: new Map() };
    slot.worker.on('message', (r: EncodeReply) => {
      const p = slot.pending.get(r.id);
      if (!p) return;
      slot.pending.delete(r.id);
      if ('error' in r) p.reject(new Error(`JPEG encoding failed: ${r.error}`)); else p.resolve(r.b64);
    });
    const fail = (why: string) => {
      for (const p of slot.pending.values()) p.reject(new Error(`JPEG encoder worker ${why}`));
      slot.pending.clear();
      const i = this.slots.indexOf(slot);
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    };
    slot.worker.on('error', (e: unknown) => fail(`crashed: ${e instanceof Error ? e.message : String(e)}`));
    slot.worker.on('exit', (code) => { if (!this.closed) fail(`exited with code ${code}`); });
    return slot;
  }

  /** Base64 JPEGs of every image of the batch, in order. */
  async encode(images: ImageBatch, quality: number): Promise<string[]> {
    if (this.closed) throw new Error('JpegEncoder is closed');
    const parts = Math.min(this.slots.length, images.n);
    if (!parts) return [];
    const per = Math.ceil(images.n / parts);
    const jobs: Promise<string[]>[] = [];
    for (let from = 0; from < images.n; from += per) {
      const slot = this.slots[this.next++ % this.slots.length];
      const chunk = sliceBatch(images, from, Math.min(images.n, from + per));
      const id = ++this.taskId;
      const task: EncodeTask = { id, images: { ...chunk, data: chunk.data.slice() }, quality };
      jobs.push(new Promise<string[]>((resolve, reject) => {
        slot.pending.set(id, { resolve, reject });
        slot.worker.postMessage(task, [task.images.data.buffer as ArrayBuffer]);
      }));
    }
    return (await Promise.all(jobs)).flat();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.slots) for (const p of s.pending.values()) p.reject(new Error('JpegEncoder closed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
