// A small line chart as SVG (a loss curve), with axes, ticks, a title and a legend below the
// plot (so it never covers a curve). No dependencies.

export interface Series {
  name: string;
  points: [number, number][];
  color?: string;
}

function ticks(lo: number, hi: number, n = 5, integer = false): number[] {
  const span = hi - lo || 1;
  const step0 = integer ? Math.max(1, span / n) : span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(+v.toPrecision(12));
  return out;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** Legend entries laid out in rows of width `w`: [x, row] per entry (a swatch, then the name). */
function legendLayout(names: string[], w: number): { at: [number, number][]; rows: number } {
  const at: [number, number][] = [];
  let x = 0, row = 0;
  for (const n of names) {
    const width = 26 + 7 * n.length;
    if (x > 0 && x + width > w) { x = 0; row++; }
    at.push([x, row]);
    x += width + 12;
  }
  return { at, rows: names.length ? row + 1 : 0 };
}

export function lineChartSVG(series: Series[], opts: { title: string; xLabel: string; yLabel: string; logY?: boolean; width?: number; height?: number }): string {
  const W = opts.width ?? 640, L = 70, R = 20, T = 40;
  const legend = series.length > 1 ? legendLayout(series.map((s) => s.name), W - L - R) : { at: [], rows: 0 };
  const B = 50 + 18 * legend.rows, H = (opts.height ?? 360) + 18 * legend.rows;
  const tf = (y: number) => (opts.logY ? Math.log10(Math.max(y, 1e-12)) : y);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => tf(p[1])));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x: number) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y: number) => H - B - ((y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  parts.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(opts.title)}</text>`);
  for (const t of ticks(x0, x1, 5, xs.every(Number.isInteger))) parts.push(`<line x1="${sx(t)}" x2="${sx(t)}" y1="${T}" y2="${H - B}" stroke="#eee"/><text x="${sx(t)}" y="${H - B + 16}" text-anchor="middle">${t}</text>`);
  for (const t of ticks(y0, y1)) parts.push(`<line x1="${L}" x2="${W - R}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/><text x="${L - 6}" y="${sy(t) + 4}" text-anchor="end">${opts.logY ? Number((10 ** t).toPrecision(2)) : t}</text>`);
  parts.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/><line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`);
  parts.push(`<text x="${W / 2}" y="${H - B + 34}" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${H / 2}) rotate(-90)" text-anchor="middle">${esc(opts.yLabel)}</text>`);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e'];
  series.forEach((s, k) => {
    const c = s.color ?? colors[k % colors.length];
    parts.push(`<polyline fill="none" stroke="${c}" stroke-width="1.8" points="${s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(tf(y)).toFixed(1)}`).join(' ')}"/>`);
    const at = legend.at[k];
    if (at) {
      const lx = L + at[0], ly = H - B + 52 + 18 * at[1];
      parts.push(`<line x1="${lx}" x2="${lx + 20}" y1="${ly - 4}" y2="${ly - 4}" stroke="${c}" stroke-width="3"/><text x="${lx + 26}" y="${ly}" fill="#333">${esc(s.name)}</text>`);
    }
  });
  parts.push('</svg>');
  return parts.join('\n');
}
