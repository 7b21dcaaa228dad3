// `ddpo inspect`: named configs (sd-v1's names and shapes equal the shared reference JSON, in
// order), a real diffusers folder read from its headers with the loaders' renaming rules, and a
// broken folder whose problems in all three parts are reported at once with a non-zero exit.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  countParameters, groupCounts, inspectCommand, inspectConfig, inspectFolder, reportsToJson, topLevelModule,
} from '../cli/inspect.js';

const s = suite('inspect');

function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json')) && dirname(d) !== d) d = dirname(d);
  return d;
}
const ROOT = repoRoot();
const REF = resolve(ROOT, '..', 'shared', 'reference');
const PIPE = join(REF, 'tiny-sd-pipe');
const SHAPES = join(REF, 'sd_v1_parameter_shapes.json');
const skip = (what: string) => console.log(`  (skipped ${what}: ${REF} not found)`);

s('named configs: sd-v1 gives exactly the reference names and shapes, in order; counts and groups add up', () => {
  const reports = inspectConfig('sd-v1');
  const json = reportsToJson(reports, false) as Record<string, Record<string, number[]>>;
  assert.equal(Object.keys(json['unet']).length, 686);
  if (existsSync(SHAPES)) {
    const ref = JSON.parse(readFileSync(SHAPES, 'utf8')) as Record<string, Record<string, number[]>>;
    for (const part of ['unet', 'vae', 'text_encoder']) {
      assert.equal(Object.keys(json[part]), Object.keys(ref[part]), `${part}: names in order`);
      assert.equal(json[part], ref[part], `${part}: shapes`);
    }
  } else skip('the shared shapes comparison');
  // SD v1-4's well-known sizes.
  assert.is(countParameters(reports[0].params), 859_520_964);
  assert.is(countParameters(reports[1].params), 83_653_863);
  assert.is(countParameters(reports[2].params), 123_060_480);
  for (const r of reports) assert.is(groupCounts(r.params).reduce((a, g) => a + g.parameters, 0), countParameters(r.params));
  assert.is(topLevelModule('down_blocks.1.resnets.0.conv1.weight'), 'down_blocks.1');
  assert.is(topLevelModule('encoder.layers.3.mlp.fc1.weight'), 'encoder');
  assert.throws(() => inspectConfig('sd-v9'), /unknown config "sd-v9" \(known: sd-v1, tiny, small\)/);
});

s('--json --part prints a flat { name: shape } object; an unknown part is an Error', async () => {
  let out = '';
  const rc = await inspectCommand(undefined, { config: 'tiny', part: 'vae', json: true }, (t) => { out += t; });
  assert.is(rc, 0);
  const j = JSON.parse(out);
  assert.equal(j['decoder.mid_block.attentions.0.to_q.weight'], [32, 32]);
  assert.is(Object.keys(j).length, 124);
  let threw = false;
  try { await inspectCommand(undefined, { config: 'tiny', part: 'clip' }); } catch (e) { threw = /--part clip/.test((e as Error).message); }
  assert.ok(threw);
});

s('a diffusers folder with old key names: headers only, renamed as the loaders rename, no problems; the tiny config describes it', async () => {
  if (!existsSync(PIPE)) return skip('folder inspection');
  const reports = await inspectFolder(PIPE);
  assert.equal(reports.map((r) => r.problems), [[], [], []]);
  const [unet, vae, te] = reports;
  assert.is(unet.params.length, 208);
  const q = vae.params.find((p) => p.name === 'encoder.mid_block.attentions.0.to_q.weight')!;
  assert.is(q.fileName, 'encoder.mid_block.attentions.0.query.weight');
  assert.equal(q.dtype, 'F32');
  assert.ok(te.params.every((p) => !p.name.startsWith('text_model.') && p.fileName?.startsWith('text_model.')));
  assert.ok(!te.params.some((p) => p.name.includes('position_ids')), 'the position_ids buffer is skipped');
  // Our `tiny` config has the same names and shapes as the folder.
  const tiny = reportsToJson(inspectConfig('tiny'), false);
  assert.equal(reportsToJson(reports, false), tiny);
  // One component folder works on its own.
  const one = await inspectFolder(join(PIPE, 'text_encoder'));
  assert.is(one.length, 1);
  assert.is(one[0].part, 'text_encoder');
});

s('a broken folder: every problem of every part reported at once, exit code 1 (also through the CLI)', async () => {
  if (!existsSync(PIPE)) return skip('broken-folder inspection');
  const dir = mkdtempSync(join(tmpdir(), 'ddpo-inspect-'));
  try {
    cpSync(PIPE, dir, { recursive: true });
    const edit = (rel: string, f: (c: Record<string, unknown>) => void) => {
      const p = join(dir, rel);
      const c = JSON.parse(readFileSync(p, 'utf8'));
      f(c);
      writeFileSync(p, JSON.stringify(c));
    };
    edit('unet/config.json', (c) => { c.cross_attention_dim = 16; }); // attn2.to_k/to_v mis-shaped
    edit('vae/config.json', (c) => { c.layers_per_block = 2; }); // resnets.1 missing
    edit('text_encoder/config.json', (c) => { c.num_hidden_layers = 1; }); // layer 1 unexpected
    let out = '', err = '';
    const rc = await inspectCommand(dir, { summary: true }, (t) => { out += t; }, (t) => { err += t; });
    assert.is(rc, 1);
    assert.match(err, /unet: mis-shaped or bad keys \(8\)/);
    assert.match(err, /down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k\.weight: shape \[32,32\] in the file, \[32,16\] expected/);
    assert.match(err, /vae: missing keys \(\d+\): encoder\.down_blocks\.0\.resnets\.1\.norm1\.weight/);
    assert.match(err, /text_encoder: unexpected keys \(16\): text_model\.encoder\.layers\.1\./);
    assert.match(out, /== unet/);
    const cli = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'ddpo.js'), 'inspect', dir, '--summary'], { encoding: 'utf8', env: { ...process.env, XDG_RUNTIME_DIR: '/tmp' } });
    assert.is(cli.status, 1, cli.stderr);
    assert.match(cli.stderr, /problem\(s\)/);
    assert.match(cli.stdout, /by top-level module/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

s.run();
