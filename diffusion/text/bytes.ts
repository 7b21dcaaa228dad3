// GPT-2's byte ↔ symbol table, which CLIP's BPE also uses: every byte value gets a printable
// Unicode symbol so a word's UTF-8 bytes become a string of vocabulary symbols and no word is ever
// unknown. Bytes that are printable Latin-1 (!..~, ¡..¬, ®..ÿ) stand for themselves; the other 68
// (controls, space, DEL, NBSP, soft hyphen) take U+0100 onwards in increasing byte order.

/** Bytes in the order CLIP lists them in its base vocabulary: printable ones first, then the rest. */
export const BYTE_ORDER: readonly number[] = (() => {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const taken = new Set(printable);
  const rest: number[] = [];
  for (let b = 0; b < 256; b++) if (!taken.has(b)) rest.push(b);
  return [...printable, ...rest];
})();

/** BYTE_TO_SYMBOL[b]: the one-character symbol standing for byte b. */
export const BYTE_TO_SYMBOL: readonly string[] = (() => {
  const out = new Array<string>(256);
  let extra = 0;
  for (const b of BYTE_ORDER) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = String.fromCharCode(printable ? b : 256 + extra++);
  }
  return out;
})();

/** Symbol → byte, the inverse of BYTE_TO_SYMBOL. */
export const SYMBOL_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_SYMBOL.map((s, b) => [s, b]));
