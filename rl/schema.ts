// A declarative config table (every option's type, default and meaning) and what is derived from
// it: defaults, validation of a JSON config that lists every problem (unknown keys with "did you
// mean", wrong types, bounds), `--set key=value` coercion by the key's type, deep merging, and
// markdown docs. Both configs are tables of it: `ddpo train`'s (rl/config.ts, which adds the
// reward and prompts value types as CustomTypes) and `ddpo pretrain`'s (pretrain/config.ts).

export type BuiltinType = 'number' | 'integer' | 'boolean' | 'string' | 'enum' | 'string[]' | 'integer[]' | 'boolean[]';
/** A built-in type, or the name of one of the schema's CustomTypes. */
export type FieldType = BuiltinType | (string & {});

/** A value type a table adds (e.g. a reward: a name or a JSON object), with its own checks. */
export interface CustomType {
  /** How the type reads in errors and docs. */
  typeName: string;
  /** Pushes one message per problem of a non-null value. */
  check(v: unknown, key: string, problems: string[]): void;
  /** A command-line string as the value (parseJson reports bad JSON naming the key). */
  coerce(s: string, key: string, parseJson: (text: string) => unknown): unknown;
}

export interface Field<V = unknown> {
  type: FieldType;
  default: V;
  doc: string;
  /** How the default reads in the docs when it is not the literal value. */
  defaultDoc?: string;
  values?: readonly string[];
  min?: number;
  max?: number;
  /** Strict lower bound (value must be > gt). */
  gt?: number;
  nullable?: boolean;
  /** A string that may be empty. */
  allowEmpty?: boolean;
}

export interface Section<T = unknown> {
  section: true;
  doc: string;
  fields: Spec<T, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

type Leaf = string | number | boolean | null | readonly unknown[];
/** The table for T: a Field per leaf, a Section per nested object; X names object types that are leaves (custom values). */
export type Spec<T, X = never> = { [K in keyof T]-?: T[K] extends Leaf | X ? Field<T[K]> : Section<T[K]> };
type AnySpec = Record<string, Field | Section>;

export const field = <V>(type: FieldType, def: V, doc: string, extra: Partial<Field<V>> = {}): Field<V> => ({ type, default: def, doc, ...extra });
export const num = <V extends number | null>(def: V, doc: string, extra: Partial<Field<V>> = {}) => field<V>('number', def, doc, extra);
export const int = <V extends number | null>(def: V, doc: string, extra: Partial<Field<V>> = {}) => field<V>('integer', def, doc, extra);
export const bool = (def: boolean, doc: string) => field<boolean>('boolean', def, doc);
export const str = <V extends string | null>(def: V, doc: string, extra: Partial<Field<V>> = {}) => field<V>('string', def, doc, extra);
export const section = <T, X = never>(doc: string, fields: Spec<T, X>): Section<T> => ({ section: true, doc, fields });

const isSection = (n: Field | Section): n is Section => (n as Section).section === true;

/** A value as it reads in an error (JSON, cut at 80 characters). */
export function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Levenshtein distance, for "did you mean" hints. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return d[b.length];
}

const BOOLS: Record<string, boolean> = { true: true, false: false, yes: true, no: false, on: true, off: false, '1': true, '0': false };

export type Overrides = Record<string, unknown> | readonly (readonly [string, unknown])[];

export class ConfigSchema<T, X = never> {
  private readonly root: AnySpec;

  /** `docsName` is where the docs live, named in every error ("docs/pretrain-config.md"). */
  constructor(readonly spec: Spec<T, X>, readonly docsName: string, private readonly custom: Record<string, CustomType> = {}) {
    this.root = spec as unknown as AnySpec;
  }

  /** The table's node at a dotted key (a Field, a Section), or undefined. */
  node(key: string): Field | Section | undefined {
    return this.nodeAt(key);
  }

  /** Every leaf key in dotted form, in table order. */
  keys(spec: AnySpec = this.root, prefix = ''): string[] {
    return Object.entries(spec).flatMap(([k, n]) => (isSection(n) ? this.keys(n.fields as AnySpec, `${prefix}${k}.`) : [`${prefix}${k}`]));
  }

  private nodeAt(key: string): Field | Section | undefined {
    let spec: AnySpec | undefined = this.root;
    let node: Field | Section | undefined;
    for (const part of key.split('.')) {
      if (!spec || !Object.prototype.hasOwnProperty.call(spec, part)) return undefined;
      node = spec[part];
      spec = isSection(node) ? (node.fields as AnySpec) : undefined;
    }
    return node;
  }

  /** Every default, as a fresh object. */
  defaults(): T {
    const build = (spec: AnySpec): Record<string, unknown> =>
      Object.fromEntries(Object.entries(spec).map(([k, n]) => [k, isSection(n) ? build(n.fields as AnySpec) : structuredClone(n.default)]));
    return build(this.root) as T;
  }

  typeName(f: Field): string {
    const base = f.type === 'enum' ? f.values!.map((v) => `'${v}'`).join(' | ') : this.custom[f.type]?.typeName ?? f.type;
    return f.nullable ? `${base} or null` : base;
  }

  private suggest(key: string): string {
    const all = this.keys();
    const leaf = key.split('.').pop()!;
    const same = all.filter((k) => k.split('.').pop() === leaf && k !== key);
    if (same.length) return ` (did you mean ${same.join(' or ')}?)`;
    const sections = [...new Set(all.flatMap((k) => k.split('.').slice(0, -1).map((_, i, a) => a.slice(0, i + 1).join('.'))))];
    const best = [...all, ...sections].map((k) => [k, editDistance(k, key)] as const).sort((x, y) => x[1] - y[1])[0];
    return best && best[1] <= Math.max(2, Math.floor(key.length / 4)) ? ` (did you mean ${best[0]}?)` : '';
  }

  private unknownKey(key: string, valid: string[]): string {
    return `unknown config key "${key}"${this.suggest(key)}; valid keys${key.includes('.') ? ` in ${key.slice(0, key.lastIndexOf('.'))}` : ''}: ${valid.join(', ')}`;
  }

  private checkField(f: Field, v: unknown, key: string, problems: string[]): void {
    const expected = () => `${key}: expected ${this.typeName(f)}, got ${show(v)}`;
    if (v === null) { if (!f.nullable) problems.push(expected()); return; }
    const bounds = (x: number, k: string) => {
      if (f.min !== undefined && x < f.min) problems.push(`${k}: ${x} is below the minimum ${f.min}`);
      if (f.gt !== undefined && !(x > f.gt)) problems.push(`${k}: ${x} must be greater than ${f.gt}`);
      if (f.max !== undefined && x > f.max) problems.push(`${k}: ${x} is above the maximum ${f.max}`);
    };
    switch (f.type) {
      case 'number':
      case 'integer':
        if (typeof v !== 'number' || !Number.isFinite(v) || (f.type === 'integer' && !Number.isInteger(v))) problems.push(expected());
        else bounds(v, key);
        return;
      case 'boolean': if (typeof v !== 'boolean') problems.push(expected()); return;
      case 'string': if (typeof v !== 'string' || (!v && !f.allowEmpty)) problems.push(`${key}: expected a ${f.allowEmpty ? '' : 'non-empty '}string, got ${show(v)}`); return;
      case 'enum': if (typeof v !== 'string' || !f.values!.includes(v)) problems.push(expected()); return;
      case 'string[]':
        if (!Array.isArray(v) || !v.length || v.some((s) => typeof s !== 'string' || !s)) problems.push(`${key}: expected a non-empty list of non-empty strings${f.nullable ? ' or null' : ''}, got ${show(v)}`);
        return;
      case 'integer[]':
        if (!Array.isArray(v) || !v.length || v.some((x) => typeof x !== 'number' || !Number.isInteger(x))) problems.push(`${key}: expected a non-empty list of integers, got ${show(v)}`);
        else v.forEach((x, i) => bounds(x as number, `${key}[${i}]`));
        return;
      case 'boolean[]':
        if (!Array.isArray(v) || !v.length || v.some((x) => typeof x !== 'boolean')) problems.push(`${key}: expected a non-empty list of booleans, got ${show(v)}`);
        return;
      default: {
        const c = this.custom[f.type];
        if (!c) throw new Error(`config schema: "${key}" has type ${f.type}, which is neither built in nor a custom type of this schema`);
        c.check(v, key, problems);
      }
    }
  }

  private checkObject(spec: AnySpec, v: unknown, prefix: string, problems: string[], partial: boolean): void {
    if (!v || typeof v !== 'object' || Array.isArray(v)) { problems.push(`${prefix ? prefix.slice(0, -1) : 'config'}: expected an object, got ${show(v)}`); return; }
    const o = v as Record<string, unknown>;
    for (const [k, val] of Object.entries(o)) {
      const key = prefix + k;
      if (!Object.prototype.hasOwnProperty.call(spec, k)) { problems.push(this.unknownKey(key, prefix ? this.keys(spec, prefix) : this.keys())); continue; }
      const n = spec[k];
      if (isSection(n)) this.checkObject(n.fields as AnySpec, val, `${key}.`, problems, partial);
      else if (val === undefined) problems.push(`${key}: missing`);
      else this.checkField(n, val, key, problems);
    }
    if (!partial) for (const k of Object.keys(spec)) if (!(k in o)) problems.push(`${prefix}${k}: missing`);
  }

  fail(problems: string[], what: string): never {
    throw new Error(`${what}:\n  - ${problems.join('\n  - ')}\nSee ${this.docsName} for every option and its default.`);
  }

  /** Checks a partial config (a config file's contents), listing every problem in one Error. */
  validatePartial(json: unknown, what = 'invalid config'): void {
    const problems: string[] = [];
    this.checkObject(this.root, json, '', problems, true);
    if (problems.length) this.fail(problems, what);
  }

  private parseJson(text: string, key: string): unknown {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Error(`--set ${key}=${text}: not valid JSON (${(e as Error).message})`);
    }
  }

  /** A command-line string as the value the key's type needs (a section takes a JSON object, merged into it). */
  coerce(key: string, value: unknown): unknown {
    const node = this.nodeAt(key);
    if (!node) {
      const parent = key.includes('.') ? this.nodeAt(key.slice(0, key.lastIndexOf('.'))) : undefined;
      const valid = parent && isSection(parent) ? this.keys(parent.fields as AnySpec, key.slice(0, key.lastIndexOf('.') + 1)) : this.keys();
      throw new Error(`${this.unknownKey(key, valid)}\nSee ${this.docsName} for every option and its default.`);
    }
    if (typeof value !== 'string') return value;
    const s = value.trim();
    if (isSection(node)) return this.parseJson(s, key);
    if (s === 'null' && node.nullable) return null;
    const list = () => (s.startsWith('[') ? this.parseJson(s, key) : s.split(',').map((x) => x.trim()).filter(Boolean));
    switch (node.type) {
      case 'number':
      case 'integer': {
        const n = s === '' ? NaN : Number(s);
        if (!Number.isFinite(n)) throw new Error(`--set ${key}=${value}: expected ${node.type === 'integer' ? 'an integer' : 'a number'}${node.nullable ? ' or null' : ''}`);
        return n;
      }
      case 'boolean': {
        const b = BOOLS[s.toLowerCase()];
        if (b === undefined) throw new Error(`--set ${key}=${value}: expected a boolean (true or false)`);
        return b;
      }
      case 'string':
      case 'enum':
        return node.allowEmpty ? value : s;
      case 'string[]':
        return list();
      case 'integer[]': {
        const l = list();
        return Array.isArray(l) ? l.map((x) => (typeof x === 'string' ? Number(x) : x)) : l;
      }
      case 'boolean[]': {
        const l = list();
        return Array.isArray(l) ? l.map((x) => (typeof x === 'string' ? BOOLS[x.toLowerCase()] ?? x : x)) : l;
      }
      default: {
        const c = this.custom[node.type];
        return c ? c.coerce(s, key, (text) => this.parseJson(text, key)) : s;
      }
    }
  }

  private merge(base: Record<string, unknown>, over: Record<string, unknown>, spec: AnySpec): Record<string, unknown> {
    const out = { ...base };
    for (const [k, v] of Object.entries(over)) {
      const n = spec[k];
      out[k] = n && isSection(n) && v && typeof v === 'object' && !Array.isArray(v)
        ? this.merge((base[k] ?? {}) as Record<string, unknown>, v as Record<string, unknown>, n.fields as AnySpec)
        : v;
    }
    return out;
  }

  /**
   * Defaults, then the config file's values, then `overrides` (dotted keys; strings coerced to the
   * key's type; later ones win), all checked: one Error lists every problem.
   */
  resolve(fileJson?: unknown, overrides: Overrides = {}): T {
    if (fileJson !== undefined) this.validatePartial(fileJson, 'invalid config file');
    const over: Record<string, unknown> = {};
    const pairs = Array.isArray(overrides) ? overrides : Object.entries(overrides);
    for (const [k, v] of pairs) {
      if (v === undefined) continue;
      const parts = k.split('.');
      let o = over;
      for (const p of parts.slice(0, -1)) { if (!o[p] || typeof o[p] !== 'object') o[p] = {}; o = o[p] as Record<string, unknown>; }
      const val = this.coerce(k, v);
      const last = parts[parts.length - 1];
      const n = this.nodeAt(k);
      // A JSON object given for a section merges into it, so `--set train={"lr":1e-4}` keeps the rest.
      o[last] = n && isSection(n) && val && typeof val === 'object' && !Array.isArray(val) && o[last] && typeof o[last] === 'object' ? { ...(o[last] as object), ...(val as object) } : val;
    }
    this.validatePartial(over, 'invalid command-line override');
    const merged = this.merge(this.merge(this.defaults() as Record<string, unknown>, (fileJson ?? {}) as Record<string, unknown>, this.root), over, this.root);
    const problems: string[] = [];
    this.checkObject(this.root, merged, '', problems, false);
    if (problems.length) this.fail(problems, 'invalid config');
    return merged as T;
  }

  /** Markdown tables of every option (one per section), after a title and intro paragraphs. */
  docs(title: string, intro: readonly string[]): string {
    const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
    const def = (f: Field) => {
      if (f.defaultDoc) return cell(f.defaultDoc);
      const v = f.default;
      const s = typeof v === 'number' && f.type === 'number' && Number.isInteger(v) && !String(v).includes('e') ? v.toFixed(1) : typeof v === 'number' ? String(v) : JSON.stringify(v);
      return `\`${cell(s)}\``;
    };
    const out: string[] = [`# ${title}`, '', ...intro];
    const table = (spec: AnySpec, prefix: string, doc: string | null) => {
      out.push('', prefix ? `## \`${prefix.slice(0, -1)}\`` : '## Top level', '');
      if (doc) out.push(doc, '');
      out.push('| key | type | default | meaning |', '| --- | --- | --- | --- |');
      const sections: [string, Section][] = [];
      for (const [k, n] of Object.entries(spec)) {
        if (isSection(n)) { sections.push([k, n]); continue; }
        out.push(`| \`${prefix}${k}\` | ${cell(this.typeName(n))} | ${def(n)} | ${cell(n.doc)} |`);
      }
      for (const [k, n] of sections) table(n.fields as AnySpec, `${prefix}${k}.`, n.doc);
    };
    table(this.root, '', null);
    out.push('');
    return out.join('\n');
  }
}
