// `ddpo inspect` for CLIP: the names and shapes of openai/clip-vit-large-patch14 as a CLIPModel
// (`--config clip-vit-l-14`) or its image side as a CLIPVisionModelWithProjection
// (`--config clip-vit-l-14-vision`), computed without allocating; and a local CLIP folder checked
// from its safetensors header against its config.json (position_ids buffers skipped).

import { join } from 'node:path';
import { readSafetensorsHeader } from '../engine/safetensors.js';
import { clipModelShapes, clipVisionWithProjectionShapes, vitL14ClipConfig, vitL14VisionConfig } from '../diffusion/models/clip-vision-config.js';
import { readClipFolderConfig } from '../diffusion/models/clip-vision-io.js';
import { PartReport, checkHeaderInto } from './inspect.js';

export const CLIP_CONFIG_NAMES = ['clip-vit-l-14', 'clip-vit-l-14-vision'] as const;

export function isClipConfigName(name: string): boolean {
  return (CLIP_CONFIG_NAMES as readonly string[]).includes(name);
}

/** The named CLIP config's parameters (f32, as a fresh model would have them). */
export function inspectClipConfig(name: string): PartReport[] {
  const vision = name === 'clip-vit-l-14-vision';
  const shapes = vision ? clipVisionWithProjectionShapes(vitL14VisionConfig()) : clipModelShapes(vitL14ClipConfig());
  return [{ part: vision ? 'vision' : 'clip', source: `config ${name}`, params: shapes.map(([n, shape]) => ({ name: n, shape, dtype: 'f32' })), problems: [] }];
}

/** A CLIPModel or CLIPVisionModelWithProjection folder, from config.json and the weights' header. */
export async function inspectClipFolder(dir: string): Promise<PartReport> {
  const info = await readClipFolderConfig(dir, 'inspect');
  const report: PartReport = { part: info.kind, source: join(dir, 'model.safetensors'), params: [], problems: [] };
  const expected = new Map(info.kind === 'clip' ? clipModelShapes(info.config) : clipVisionWithProjectionShapes(info.config));
  let header;
  try { header = await readSafetensorsHeader(report.source); } catch (e) { report.problems.push((e as Error).message); return report; }
  checkHeaderInto(report, header, expected, (key) => (key.endsWith('embeddings.position_ids') ? null : key));
  return report;
}
