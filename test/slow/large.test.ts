// Opt-in large-shape checks (npm run test:slow): tensors over the device's real binding limit.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../../engine/index.js';
import { testDevice } from '../helpers.js';

const dev = await testDevice();
const s = suite('large');

s('elementwise and reductions over a tensor larger than maxStorageBufferBindingSize', async () => {
  const n = Math.floor((dev.maxBindingBytes * 1.3) / 4); // 130% of the binding limit, in f32
  const x = E.arange(0, n, 1, 'f32');
  const y = E.mulScalar(x, 0.5);
  const rows = 1000;
  const m = E.reshape(E.slice(y, [0], [rows * Math.floor(n / rows)]), [rows, Math.floor(n / rows)]);
  const r = await E.max(m, 1).data();
  const cols = Math.floor(n / rows);
  for (const i of [0, 1, rows - 1]) assert.is(r[i], Math.fround(((i + 1) * cols - 1) * 0.5));
  const tail = await E.slice(y, [n - 3]).data();
  assert.equal([...tail], [n - 3, n - 2, n - 1].map((v) => Math.fround(Math.fround(v) * 0.5)));
  for (const t of [x, y, m]) t.dispose();
});

s.run();
