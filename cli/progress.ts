// A one-line progress report (steps, rate, ETA) for long work; plain lines when not on a TTY.

export class Progress {
  private readonly start = Date.now();
  private lastPrint = 0;
  constructor(private readonly total: number, private readonly label: string, private readonly unit = 'step') {}

  update(done: number, extra = ''): void {
    const now = Date.now();
    const tty = process.stderr.isTTY;
    if (done < this.total && now - this.lastPrint < (tty ? 100 : 2000)) return;
    this.lastPrint = now;
    const secs = (now - this.start) / 1000;
    const rate = done / Math.max(secs, 1e-9);
    const eta = rate > 0 ? (this.total - done) / rate : Infinity;
    const width = 24;
    const filled = Math.round((done / this.total) * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const line = `${this.label} ${bar} ${done}/${this.total} ${this.unit}s  ${rate.toFixed(1)} ${this.unit}/s  ETA ${fmtTime(eta)}${extra ? '  ' + extra : ''}`;
    if (tty) process.stderr.write(`\r${line}\x1b[K${done >= this.total ? '\n' : ''}`);
    else process.stderr.write(line + '\n');
  }
}

export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
