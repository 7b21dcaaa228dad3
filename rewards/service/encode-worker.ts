// Worker-thread entry of JpegEncoder: encodes the images it is sent as base64 JPEGs.

import { parentPort } from 'node:worker_threads';
import { encodeImage } from './protocol.js';
import type { ImageBatch } from '../types.js';

export interface EncodeTask { id: number; images: ImageBatch; quality: number }
export type EncodeReply = { id: number; b64: string[] } | { id: number; error: string };

const port = parentPort;
if (!port) throw new Error('rewards/service/encode-worker.js is a worker-thread entry; use JpegEncoder');
port.on('message', (t: EncodeTask) => {
  try {
    port.postMessage({ id: t.id, b64: Array.from({ length: t.images.n }, (_, i) => encodeImage(t.images, i, t.quality)) } satisfies EncodeReply);
  } catch (e) {
    port.postMessage({ id: t.id, error: e instanceof Error ? e.message : String(e) } satisfies EncodeReply);
  }
});
