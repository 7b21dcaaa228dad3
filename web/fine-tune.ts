// One DDPO epoch in the page (placeholder until the Node-free trainer core lands).
import type { StableDiffusion } from '../diffusion/load-folder.js';

export interface FineTuneOptions { prompt: string; samples: number; steps: number }
export interface FineTuneResult {
  rewards: number[]; meanReward: number; loss: number; approxKl: number; clipfrac: number; loraChange: number; ms: number;
  images: number[][]; shape: [number, number, number];
}
export type FineTuneProgress = (p: { phase: string; done: number; total: number }) => void;

export async function fineTuneEpoch(_sd: StableDiffusion, _o: Partial<FineTuneOptions>, _p: FineTuneProgress): Promise<FineTuneResult> {
  throw new Error('not implemented yet');
}
