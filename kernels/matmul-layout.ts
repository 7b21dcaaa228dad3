// What every matmul kernel shares: the uniforms (shapes, strides, offsets of the three operands)
// and the description of a variant. Its own file so that each variant imports it, not each other.

import { DType } from '../engine/dtype.js';
import { MAX_RANK } from '../engine/shape.js';
import { ParamLayout } from './common.js';

/** A way of computing the product; `tileM × tileN` outputs per workgroup, batch on z. */
export interface MatmulVariant {
  name: string;
  tileM: number;
  tileN: number;
  key(dtype: DType): string;
  code(dtype: DType): string;
  /** Shared memory the kernel declares, checked against maxComputeWorkgroupStorageSize. */
  sharedBytes: number;
  threads: number;
  /**
   * A twin that computes the same bits (same fmas, same order) but binds B as vec4s along n: the
   * host uses it for a dispatch where B's n stride is 1 and N, B's k stride, batch strides and
   * offset are multiples of 4 (see vec4BApplies).
   */
  vec4B?: MatmulVariant;
}

/** Whether a B operand with these strides (in elements) can be read as aligned vec4s along n. */
export function vec4BApplies(N: number, sBn: number, sBk: number, offB: number, batchStrides: readonly number[]): boolean {
  return sBn === 1 && N % 4 === 0 && sBk % 4 === 0 && offB % 4 === 0 && batchStrides.every((s) => s % 4 === 0);
}

export const matmulLayout = new ParamLayout([
  { name: 'bshape', type: 'u32', len: MAX_RANK },
  { name: 'bsA', type: 'u32', len: MAX_RANK },
  { name: 'bsB', type: 'u32', len: MAX_RANK },
  { name: 'bsC', type: 'u32', len: MAX_RANK },
  { name: 'brank', type: 'u32' },
  { name: 'M', type: 'u32' },
  { name: 'N', type: 'u32' },
  { name: 'K', type: 'u32' },
  { name: 'sAm', type: 'u32' },
  { name: 'sAk', type: 'u32' },
  { name: 'sBk', type: 'u32' },
  { name: 'sBn', type: 'u32' },
  { name: 'sCm', type: 'u32' },
  { name: 'sCn', type: 'u32' },
  { name: 'offA', type: 'u32' },
  { name: 'offB', type: 'u32' },
  { name: 'offC', type: 'u32' },
  /** 1 when A's k index is the fast-moving (stride-1) one: picks the load pattern that reads consecutive addresses. */
  { name: 'aKFast', type: 'u32' },
  /** 1 when B's n index is the fast-moving one. */
  { name: 'bNFast', type: 'u32' },
  /** Added to workgroup_id: lets one problem be split into several dispatches of ≤ 65,535 groups per dimension. */
  { name: 'xbase', type: 'u32' },
  { name: 'ybase', type: 'u32' },
  { name: 'zbase', type: 'u32' },
]);

