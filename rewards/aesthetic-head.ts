// The LAION aesthetic predictor's head (improved-aesthetic-predictor, "sac+logos+ava1-l14-
// linearMSE"), as the DDPO paper's aesthetic reward uses it: on CLIP's image embedding divided by
// its L2 norm, Linear D→1024 → 1024→128 → 128→64 → 64→16 → 16→1 with no activations (the
// original nn.Sequential has Dropout between the first four, inactive in eval), raw score out.
// Names as in the file: layers.{0,2,4,6,7}.{weight,bias} (the gaps are the dropouts).

import { Tensor, div, matmul, add, noGrad, reshape, sqrt, sum, square, tidy, nn } from '../engine/index.js';
import type { Device } from '../engine/index.js';
import { planCheckedLoad, streamInto } from '../diffusion/models/checked-load.js';
import { SafetensorsFile, openSafetensorsFile } from '../engine/safetensors.js';

/** [index in the Sequential, output width]; the first layer's input is CLIP's projection width. */
const LAYERS: readonly [number, number][] = [[0, 1024], [2, 128], [4, 64], [6, 16], [7, 1]];

/** The head's names and shapes for embeddings of width `inputDim` (768 for ViT-L/14). */
export function aestheticHeadShapes(inputDim: number): [string, number[]][] {
  const out: [string, number[]][] = [];
  let inF = inputDim;
  for (const [i, outF] of LAYERS) {
    out.push([`layers.${i}.weight`, [outF, inF]], [`layers.${i}.bias`, [outF]]);
    inF = outF;
  }
  return out;
}

class Layers extends nn.Module {}

export class AestheticHead extends nn.Module {
  readonly linears: nn.Linear[] = [];
  constructor(readonly inputDim: number, device: Device) {
    super();
    const layers = this.registerModule('layers', new Layers());
    let inF = inputDim;
    for (const [i, outF] of LAYERS) {
      this.linears.push(layers.registerModule(String(i), new nn.Linear(inF, outF, { device, seed: i + 1 })));
      inF = outF;
    }
    this.freeze();
  }

  /** Raw embeddings [B, D] → scores [B]: L2-normalised, then the five linear layers. */
  forward(embeds: Tensor): Tensor {
    if (embeds.rank !== 2 || embeds.shape[1] !== this.inputDim) throw new Error(`AestheticHead: embeddings ${embeds.describe()} must be [batch, ${this.inputDim}]`);
    return noGrad(() => tidy(() => {
      let x = div(embeds, sqrt(sum(square(embeds), 1, true)));
      for (const lin of this.linears) x = add(matmul(x, lin.weight, { transB: true }), lin.bias!);
      return reshape(x, [embeds.shape[0]]);
    }));
  }
}

/**
 * Loads the head from a safetensors file. Its input width comes from layers.0.weight and must be
 * `expectInput` (the CLIP model's projection width) when given; any other shape, a missing or an
 * extra key is an Error naming the file and the keys.
 */
export async function loadAestheticHead(path: string, device: Device, expectInput?: number): Promise<AestheticHead> {
  const file = await openSafetensorsFile(path).catch((e: Error) => { throw new Error(`aesthetic head ${path}: ${e.message}`); });
  try {
    return await loadHead(file, path, device, expectInput);
  } finally {
    await file.source.close();
  }
}

async function loadHead(file: SafetensorsFile, path: string, device: Device, expectInput?: number): Promise<AestheticHead> {
  const header = file.header;
  const first = header.tensors.get('layers.0.weight');
  if (!first || first.shape.length !== 2) throw new Error(`aesthetic head ${path}: no 2-D layers.0.weight (is this the LAION head? expected layers.{0,2,4,6,7}.{weight,bias}, Linear D→1024→128→64→16→1)`);
  const D = first.shape[1];
  if (expectInput !== undefined && D !== expectInput) {
    throw new Error(`aesthetic head ${path}: it takes ${D}-d embeddings (layers.0.weight [${first.shape.join(', ')}]) but the CLIP model's projection gives ${expectInput}-d ones: use the head made for this CLIP model`);
  }
  const fileKey = planCheckedLoad(file, new Map(aestheticHeadShapes(D)), (k) => k, 'aesthetic head');
  const head = new AestheticHead(D, device);
  try {
    await streamInto(head, file, fileKey, device, 'f32', () => 'all');
  } catch (e) {
    head.dispose();
    throw e;
  }
  return head;
}
