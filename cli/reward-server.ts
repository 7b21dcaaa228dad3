// `ddpo reward-server`: serves a reward over HTTP with the protocol of rewards/service/README.md,
// so that a training run elsewhere (`reward: {"service": {"url": ...}}`) or any other client can
// use it. The reward is a built-in name, a reward config as JSON (e.g. {"aesthetic": {...}},
// {"combine": [...]}), or a module export PATH#EXPORT (with --args for a factory, --thread main
// for a factory that wants the GPU device, e.g. a judge model).

import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import type { Device } from '../engine/device.js';
import { BUILTIN_REWARDS, builtinReward } from '../rewards/load.js';
import { HOSTED_REWARD_NAMES } from '../rewards/hosted-options.js';
import { isMainThreadSpec } from '../rewards/hosted.js';
import { startRewardServer, RewardServer } from '../rewards/service/server.js';
import { RewardSpec } from '../rewards/types.js';
import { RewardConfig, resolveConfig, rewardSpec } from '../rl/config.js';

export interface RewardServerCliOptions {
  reward: string;
  port: number;
  host?: string;
  /** JSON list of arguments for a PATH#EXPORT factory. */
  args?: string;
  /** 'worker' (default for PATH#EXPORT) or 'main'. */
  thread?: string;
  adapter?: string;
  workers?: number;
  retries?: number;
}

/** The spec a --reward value names (see the header); throws listing the forms. */
export function parseRewardArg(value: string, args?: string, thread?: string): RewardSpec {
  const v = value.trim();
  if (v in BUILTIN_REWARDS) {
    if (args || thread) throw new Error(`--args/--thread apply to PATH#EXPORT rewards, not to the built-in '${v}'`);
    return builtinReward(v);
  }
  if (v.startsWith('{')) {
    let json: unknown;
    try { json = JSON.parse(v); } catch (e) { throw new Error(`--reward: not valid JSON: ${(e as Error).message}`); }
    return rewardSpec(resolveConfig({ reward: json as RewardConfig }).reward);
  }
  const hash = v.lastIndexOf('#');
  if (hash > 0 && hash < v.length - 1) {
    let parsed: unknown[] | undefined;
    if (args !== undefined) {
      try { parsed = JSON.parse(args) as unknown[]; } catch (e) { throw new Error(`--args: not valid JSON: ${(e as Error).message}`); }
      if (!Array.isArray(parsed)) throw new Error('--args: expected a JSON list of the factory\'s arguments, e.g. \'["model-dir"]\'');
    }
    if (thread !== undefined && thread !== 'worker' && thread !== 'main') throw new Error(`--thread ${thread}: expected worker or main`);
    const cfg: RewardConfig = { module: v.slice(0, hash), export: v.slice(hash + 1), ...(parsed ? { args: parsed } : {}), ...(thread ? { thread: thread as 'worker' | 'main' } : {}) };
    return rewardSpec(resolveConfig({ reward: cfg }).reward);
  }
  const hosted = HOSTED_REWARD_NAMES.includes(v) ? ` ('${v}' takes options: --reward '{"${v}": {...}}')` : '';
  throw new Error(`--reward ${v}: not a built-in reward (${Object.keys(BUILTIN_REWARDS).join(', ')}), a JSON reward config, nor PATH#EXPORT${hosted}`);
}

function needsDevice(spec: RewardSpec): boolean {
  return 'combine' in spec ? spec.combine.some((p) => needsDevice(p.spec)) : isMainThreadSpec(spec);
}

/**
 * Starts the server, creating a WebGPU device only when a part of the reward runs on it (or using
 * `given`, which the caller keeps). The returned device is the one created here (null otherwise).
 */
export async function startRewardServerCommand(o: RewardServerCliOptions, log: (m: string) => void = (m) => console.error(m), given?: Device): Promise<{ server: RewardServer; device: Device | null }> {
  if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) throw new Error(`--port ${o.port}: expected a port number 0..65535 (0: any free port)`);
  const spec = parseRewardArg(o.reward, o.args, o.thread);
  let device: Device | null = null;
  if (needsDevice(spec) && !given) {
    device = await createNodeDevice({ adapter: o.adapter });
    // Also the default device, for user rewards that take it rather than the context's.
    setDefaultDevice(device);
    log(`device: ${device.adapterName}`);
  }
  const use = given ?? device;
  try {
    const server = await startRewardServer({
      reward: spec, label: o.reward.length > 120 ? `${o.reward.slice(0, 117)}...` : o.reward, port: o.port, host: o.host ?? '127.0.0.1', retries: o.retries, log,
      context: { device: use ?? undefined, log }, pool: o.workers ? { workers: o.workers } : undefined,
    });
    return { server, device };
  } catch (e) {
    device?.destroy();
    throw e;
  }
}

/** The command: serves until SIGINT/SIGTERM, then prints what it served. */
export async function rewardServerCommand(o: RewardServerCliOptions): Promise<number> {
  const { server, device } = await startRewardServerCommand(o);
  console.log(`reward server: ${o.reward} on ${server.url} (GET /health, POST /score); Ctrl-C stops it`);
  await new Promise<void>((resolve) => {
    const stop = () => { process.off('SIGINT', stop); process.off('SIGTERM', stop); resolve(); };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await server.close();
  device?.destroy();
  const st = server.stats;
  console.log(`reward server stopped: ${st.requests} requests, ${st.scoredSamples} samples scored, ${st.repeatedIds} repeated ids answered from the cache, ${st.badRequests} bad requests`);
  return 0;
}
