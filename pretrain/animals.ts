// Which emoji stands for each of the DDPO paper's 45 animals (rl/prompts.ts SIMPLE_ANIMALS), by
// its code point sequence in emoji-datasource's emoji.json ("unified"). The whole animal is used
// where Unicode has one; zebra, lion, fox, wolf, bear and frog exist only as faces; the squirrel
// is the chipmunk; the camel is the two-humped one (emoji.json's short name "camel").

import { SIMPLE_ANIMALS } from '../rl/prompts.js';

export const ANIMAL_EMOJI: Readonly<Record<string, string>> = Object.freeze({
  cat: '1F408', dog: '1F415', horse: '1F40E', monkey: '1F412', rabbit: '1F407', zebra: '1F993',
  spider: '1F577-FE0F', bird: '1F426', sheep: '1F411', deer: '1F98C', cow: '1F404', goat: '1F410',
  lion: '1F981', tiger: '1F405', bear: '1F43B', raccoon: '1F99D', fox: '1F98A', wolf: '1F43A',
  lizard: '1F98E', beetle: '1FAB2', ant: '1F41C', butterfly: '1F98B', fish: '1F41F', shark: '1F988',
  whale: '1F40B', dolphin: '1F42C', squirrel: '1F43F-FE0F', mouse: '1F401', rat: '1F400', snake: '1F40D',
  turtle: '1F422', frog: '1F438', chicken: '1F414', duck: '1F986', goose: '1FABF', bee: '1F41D',
  pig: '1F416', turkey: '1F983', fly: '1FAB0', llama: '1F999', camel: '1F42B', bat: '1F987',
  gorilla: '1F98D', hedgehog: '1F994', kangaroo: '1F998',
});

// Every paper animal has an emoji (checked at load, so an edit cannot drop one silently).
for (const a of SIMPLE_ANIMALS) if (!ANIMAL_EMOJI[a]) throw new Error(`pretrain/animals.ts: no emoji for the paper's animal "${a}"`);

/** unified code → animal word. */
export const EMOJI_ANIMAL: ReadonlyMap<string, string> = new Map(Object.entries(ANIMAL_EMOJI).map(([a, u]) => [u, a]));
