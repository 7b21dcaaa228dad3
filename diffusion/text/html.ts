// HTML character-reference decoding with the rules of Python's html.unescape, which CLIP's
// tokenizer applies (twice) to every prompt. Numeric references (&#NNN; &#xHH;, the ';' optional)
// follow Python exactly, including its Windows-1252 remapping of 0x80–0x9F and its U+FFFD / drop
// rules for invalid code points. Named references cover a SUBSET of HTML5's 2231 names:
//   - all 106 "legacy" names HTML5 also accepts without a ';' (the Latin-1 block nbsp … yuml,
//     amp lt gt quot and their upper-case forms, COPY, REG), with Python's longest-prefix rule for
//     them ("&ampfoo" → "&foo", "&notit;" → "¬it;");
//   - with ';' only: apos, typographic punctuation (hellip mdash ndash lsquo rsquo sbquo ldquo
//     rdquo bdquo laquo… lsaquo rsaquo bull prime Prime dagger Dagger permil), spaces and joiners
//     (ensp emsp thinsp zwnj zwj lrm rlm), symbols (trade euro minus times infin ne le ge asymp
//     larr rarr uarr darr harr hearts spades clubs diams), Latin extras (OElig oelig Scaron scaron
//     Yuml fnof circ tilde) and the Greek letters (Alpha … Omega, alpha … omega, sigmaf).
// An unknown name is left as written, as Python does. Known divergence: a name outside this subset
// that starts with a legacy name decodes by the legacy prefix here (e.g. "&notin;" → "¬in;" where
// Python gives "∉").

const LATIN1_NAMES = (
  'nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr deg plusmn ' +
  'sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest Agrave ' +
  'Aacute Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ' +
  'ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN ' +
  'szlig agrave aacute acirc atilde auml aring aelig ccedil egrave eacute ecirc euml igrave iacute ' +
  'icirc iuml eth ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute ucirc uuml ' +
  'yacute thorn yuml'
).split(' ');

/** Names (without ';') → text. `LEGACY` marks those also recognised without the ';'. */
const NAMED = new Map<string, string>();
const LEGACY = new Set<string>();

function add(name: string, cp: number | string, legacy = false): void {
  NAMED.set(name, typeof cp === 'number' ? String.fromCodePoint(cp) : cp);
  if (legacy) LEGACY.add(name);
}

LATIN1_NAMES.forEach((n, i) => add(n, 0xa0 + i, true));
for (const [n, cp] of [['amp', 0x26], ['lt', 0x3c], ['gt', 0x3e], ['quot', 0x22]] as const) {
  add(n, cp, true);
  add(n.toUpperCase(), cp, true);
}
add('COPY', 0xa9, true);
add('REG', 0xae, true);
const SEMICOLON_ONLY: [string, number][] = [
  ['apos', 0x27], ['hellip', 0x2026], ['mdash', 0x2014], ['ndash', 0x2013], ['lsquo', 0x2018],
  ['rsquo', 0x2019], ['sbquo', 0x201a], ['ldquo', 0x201c], ['rdquo', 0x201d], ['bdquo', 0x201e],
  ['lsaquo', 0x2039], ['rsaquo', 0x203a], ['bull', 0x2022], ['prime', 0x2032], ['Prime', 0x2033],
  ['dagger', 0x2020], ['Dagger', 0x2021], ['permil', 0x2030], ['ensp', 0x2002], ['emsp', 0x2003],
  ['thinsp', 0x2009], ['zwnj', 0x200c], ['zwj', 0x200d], ['lrm', 0x200e], ['rlm', 0x200f],
  ['trade', 0x2122], ['euro', 0x20ac], ['minus', 0x2212], ['infin', 0x221e], ['ne', 0x2260],
  ['le', 0x2264], ['ge', 0x2265], ['asymp', 0x2248], ['larr', 0x2190], ['uarr', 0x2191],
  ['rarr', 0x2192], ['darr', 0x2193], ['harr', 0x2194], ['spades', 0x2660], ['clubs', 0x2663],
  ['hearts', 0x2665], ['diams', 0x2666], ['OElig', 0x152], ['oelig', 0x153], ['Scaron', 0x160],
  ['scaron', 0x161], ['Yuml', 0x178], ['fnof', 0x192], ['circ', 0x2c6], ['tilde', 0x2dc],
  ['sigmaf', 0x3c2],
];
for (const [n, cp] of SEMICOLON_ONLY) add(n, cp);
// Greek: capitals U+0391… and small U+03B1… share one name list (no capital final sigma: U+03A2
// is unassigned, so the list skips that slot for both cases).
const GREEK = 'Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Mu Nu Xi Omicron Pi Rho'
  .split(' ');
const GREEK2 = 'Sigma Tau Upsilon Phi Chi Psi Omega'.split(' ');
GREEK.forEach((n, i) => { add(n, 0x391 + i); add(n.toLowerCase(), 0x3b1 + i); });
GREEK2.forEach((n, i) => { add(n, 0x3a3 + i); add(n.toLowerCase(), 0x3c3 + i); });

/** Python's remapping of numeric references 0x00, 0x0D and 0x80–0x9F (Windows-1252 guesses). */
const CP1252: Record<number, number> = {
  0x00: 0xfffd, 0x0d: 0x0d, 0x80: 0x20ac, 0x82: 0x201a, 0x83: 0x192, 0x84: 0x201e, 0x85: 0x2026,
  0x86: 0x2020, 0x87: 0x2021, 0x88: 0x2c6, 0x89: 0x2030, 0x8a: 0x160, 0x8b: 0x2039, 0x8c: 0x152,
  0x8e: 0x17d, 0x91: 0x2018, 0x92: 0x2019, 0x93: 0x201c, 0x94: 0x201d, 0x95: 0x2022, 0x96: 0x2013,
  0x97: 0x2014, 0x98: 0x2dc, 0x99: 0x2122, 0x9a: 0x161, 0x9b: 0x203a, 0x9c: 0x153, 0x9e: 0x17e,
  0x9f: 0x178,
  // 0x81, 0x8D, 0x8F, 0x90, 0x9D have no Windows-1252 glyph: Python keeps them as is.
  0x81: 0x81, 0x8d: 0x8d, 0x8f: 0x8f, 0x90: 0x90, 0x9d: 0x9d,
};

/** Code points a numeric reference may not produce: Python drops them (returns ''). */
function invalidCodePoint(n: number): boolean {
  return (n >= 0x1 && n <= 0x8) || n === 0xb || (n >= 0xe && n <= 0x1f) || (n >= 0x7f && n <= 0x9f) ||
    (n >= 0xfdd0 && n <= 0xfdef) || (n & 0xfffe) === 0xfffe;
}

function numeric(digits: string, hex: boolean): string {
  // Python parses arbitrarily long numbers; anything past 0x10FFFF becomes U+FFFD, and
  // parseInt's float result is still far above that for such inputs.
  const n = parseInt(digits, hex ? 16 : 10);
  if (n in CP1252) return String.fromCodePoint(CP1252[n]!);
  if ((n >= 0xd800 && n <= 0xdfff) || n > 0x10ffff) return '\ufffd';
  if (invalidCodePoint(n)) return '';
  return String.fromCodePoint(n);
}

function named(s: string): string {
  if (s.endsWith(';')) {
    const v = NAMED.get(s.slice(0, -1));
    if (v !== undefined) return v;
  } else if (LEGACY.has(s)) {
    return NAMED.get(s)!;
  }
  // Longest legacy prefix (at least 2 characters, shorter than the whole match), as Python does.
  for (let x = s.length - 1; x > 1; x--) {
    const p = s.slice(0, x);
    if (LEGACY.has(p)) return NAMED.get(p)! + s.slice(x);
  }
  return '&' + s;
}

// Python's pattern: `&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)`; the `u` flag makes
// the 32-character limit count code points, as Python does.
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

/** Decodes HTML character references as Python's html.unescape does (see the header for names). */
export function htmlUnescape(s: string): string {
  if (!s.includes('&')) return s;
  return s.replace(CHARREF, (_m, ref: string) => {
    if (ref[0] !== '#') return named(ref);
    const hex = ref[1] === 'x' || ref[1] === 'X';
    const digits = ref.slice(hex ? 2 : 1).replace(/;$/, '');
    return numeric(digits, hex);
  });
}
