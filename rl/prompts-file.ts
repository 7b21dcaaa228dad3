// Prompts from files (Node): a prompt list file, and the prompt function a run config names.
// rl/prompts.ts (no Node) has the built-in sets and the line parsing.

import { readFileSync } from 'node:fs';
import type { PromptsConfig } from './config.js';
import { BUILTIN_PROMPTS, LineRange, PromptFn, promptsFromLines } from './prompts.js';

/**
 * Prompts from a text file, one per line (a line's commas are part of the prompt, as in the
 * paper's use of ImageNet class names). E.g. promptsFromFile('imagenet_classes.txt', {to: 398}).
 */
export function promptsFromFile(path: string, range: LineRange = {}): PromptFn {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`promptsFromFile: cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const lines = text.split(/\r?\n/);
  // Blank lines at the end (a final newline, an editor's trailing empty lines) end the list; a
  // blank line between prompts is still an error, as it would be an empty prompt.
  while (lines.length && !lines[lines.length - 1].trim()) lines.pop();
  return promptsFromLines(lines, range, path);
}

/** The prompt function the config names (reads the prompt file now, so a bad path fails early). */
export function promptFn(p: PromptsConfig): PromptFn {
  if (typeof p === 'string') {
    const fn = BUILTIN_PROMPTS[p];
    if (!fn) throw new Error(`unknown prompt set '${p}'; built-in: ${Object.keys(BUILTIN_PROMPTS).join(', ')}`);
    return fn;
  }
  return promptsFromFile(p.file, { from: p.from, to: p.to });
}

