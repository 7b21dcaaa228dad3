// Pieces every WGSL generator shares: uniform parameter layouts, binding declarations and the
// 2-D workgroup grid that lets a 1-D problem exceed 65,535 workgroups.
//
// Shapes travel as uniforms rather than being baked into the shader text, so one compiled
// pipeline serves every shape (each new shader costs an LLVM compile on lavapipe).

import { DType } from '../engine/dtype.js';

export type ParamType = 'u32' | 'i32' | 'f32';
/** A scalar field, or an array of `len` words (padded to whole vec4s, as uniforms require). */
export interface ParamField {
  name: string;
  type: ParamType;
  len?: number;
}

export class ParamLayout {
  private readonly arrays: ParamField[];
  private readonly scalars: ParamField[];
  private readonly offsets = new Map<string, number>();
  readonly words: number;

  constructor(fields: ParamField[]) {
    this.arrays = fields.filter((f) => f.len !== undefined);
    this.scalars = fields.filter((f) => f.len === undefined);
    let w = 0;
    for (const f of this.arrays) { this.offsets.set(f.name, w); w += Math.ceil(f.len! / 4) * 4; }
    for (const f of this.scalars) { this.offsets.set(f.name, w); w += 1; }
    this.words = Math.max(4, Math.ceil(w / 4) * 4);
  }

  struct(name = 'Params'): string {
    const lines = [
      ...this.arrays.map((f) => `  ${f.name}: array<vec4<${f.type}>, ${Math.ceil(f.len! / 4)}>,`),
      ...this.scalars.map((f) => `  ${f.name}: ${f.type},`),
    ];
    return `struct ${name} {\n${lines.join('\n')}\n}`;
  }

  pack(values: Record<string, number | readonly number[]>): Uint32Array {
    const u = new Uint32Array(this.words);
    const i = new Int32Array(u.buffer);
    const f = new Float32Array(u.buffer);
    for (const field of [...this.arrays, ...this.scalars]) {
      const v = values[field.name];
      if (v === undefined) continue;
      const at = this.offsets.get(field.name)!;
      const list = typeof v === 'number' ? [v] : v;
      list.forEach((x, k) => {
        if (field.type === 'f32') f[at + k] = x;
        else if (field.type === 'i32') i[at + k] = x;
        else u[at + k] = x;
      });
    }
    return u;
  }
}

/** WGSL to read element i of a uniform word array: `P.name[i/4][i%4]`. */
export function at(array: string, index: string): string {
  return `${array}[(${index}) >> 2u][(${index}) & 3u]`;
}

export function f16Enable(...types: DType[]): string {
  return types.includes('f16') ? 'enable f16;\n' : '';
}

export interface BindingDecl {
  name: string;
  /** The element type; a vec4 of it where a kernel reads four consecutive elements at once. */
  type: DType | `vec4<${DType}>`;
}

/** Declares read-only inputs, then read-write outputs, then the uniform `P`, in the engine's binding order. */
export function declareBindings(reads: BindingDecl[], writes: BindingDecl[], layout: ParamLayout): string {
  const lines: string[] = [];
  let b = 0;
  for (const r of reads) lines.push(`@group(0) @binding(${b++}) var<storage, read> ${r.name}: array<${r.type}>;`);
  for (const w of writes) lines.push(`@group(0) @binding(${b++}) var<storage, read_write> ${w.name}: array<${w.type}>;`);
  lines.push(layout.struct());
  lines.push(`@group(0) @binding(${b}) var<uniform> P: Params;`);
  return lines.join('\n');
}

export const WG = 256;

/** Workgroup counts covering `groups` workgroups in a 2-D grid. */
export function grid(groups: number, maxPerDim = 65535): [number, number, number] {
  if (groups <= maxPerDim) return [Math.max(groups, 1), 1, 1];
  const y = Math.ceil(groups / maxPerDim);
  if (y > maxPerDim) throw new Error(`grid: ${groups} workgroups exceed ${maxPerDim}² (split the op)`);
  return [Math.ceil(groups / y), y, 1];
}

/** The entry point header for 1-D problems laid on grid(): defines `gid` (the workgroup's linear id) and `lid`. */
export const MAIN_1D = (wg = WG) => `@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let gid = wid.x + wid.y * nwg.x;`;

/**
 * WGSL that walks a linear index over a shape held in a uniform array (innermost dim last) and
 * adds idx_d·stride_d to each target variable: the strided addressing every kernel family shares.
 * `targets` pairs a variable with a function giving its stride expression for dimension `ud`.
 */
export function stridedOffsets(index: string, shape: string, rank: string, targets: [string, (ud: string) => string][], indent = '  '): string {
  const i = indent;
  return [
    `${i}{`,
    `${i}  var rem = ${index};`,
    `${i}  for (var d = i32(${rank}) - 1; d >= 0; d--) {`,
    `${i}    let ud = u32(d);`,
    `${i}    let size = ${at(shape, 'ud')};`,
    `${i}    let q = rem % size;`,
    `${i}    rem = rem / size;`,
    ...targets.map(([v, stride]) => `${i}    ${v} += q * ${stride('ud')};`),
    `${i}  }`,
    `${i}}`,
  ].join('\n');
}
