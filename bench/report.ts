// Renders benchmark results: the stdout and bench/latest.md table, and a hand-written SVG chart.
import type { LatencySummary } from './latency.ts';

/** One scenario's result: medians across rounds, and the per-round figures they came from. */
export interface ScenarioSummary {
  id: string;
  label: string;
  /** Closed loop: completed calls per second at saturation. */
  callsPerSecond: number;
  /** Open loop at the fixed offered rate, latency from the intended send time (ms). */
  openLatencyMs: Pick<LatencySummary, 'p50' | 'p90' | 'p99'>;
  /** Closed loop latency (ms): what saturation costs in queueing. */
  closedLatencyMs: Pick<LatencySummary, 'p50' | 'p90' | 'p99'>;
  /** Server CPU seconds (user + system, all of the scenario's server processes) per 1,000 calls at saturation. */
  cpuSecondsPer1k: number;
  /** The lowest round's figure: on a shared machine, the least disturbed estimate of the intrinsic cost. */
  cpuSecondsPer1kMin: number;
  /** The same at the fixed offered rate. */
  cpuSecondsPer1kOpen: number;
  /** Fraction of one core the server used at saturation: near 1 means the server, not the load, was the limit. */
  serverCoreUse: number;
  /** Fraction of one core the load generator used at saturation (the open loop polls, so it is not reported). */
  loadCoreUse: number;
  /** Peak resident set of the scenario's server processes (summed), MiB. */
  peakRssMiB: number;
  ratioToA: { callsPerSecond: number; cpuSecondsPer1k: number; openP99DeltaMs: number };
  rounds: Array<{ callsPerSecond: number; cpuSecondsPer1k: number; openP99: number }>;
}

export interface TargetResult {
  target: string;
  measured: string;
  met: boolean;
}

const fmt = (value: number, digits: number): string => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');

/** A GitHub-flavoured Markdown table: readable on a terminal and pasteable into bench/latest.md. */
export function renderTable(rows: readonly ScenarioSummary[], rate: number): string {
  const header = [
    'scenario',
    'calls/s',
    'x A',
    `p50 ms @${rate}/s`,
    'p90 ms',
    'p99 ms',
    'p99 - A',
    'CPU s/1k calls',
    'x A',
    'server / load core use',
    'peak RSS MiB',
  ];
  const lines = [header, header.map(() => '---')];
  for (const r of rows) {
    lines.push([
      `${r.id} ${r.label}`,
      fmt(r.callsPerSecond, 0),
      fmt(r.ratioToA.callsPerSecond, 2),
      fmt(r.openLatencyMs.p50, 3),
      fmt(r.openLatencyMs.p90, 3),
      fmt(r.openLatencyMs.p99, 3),
      `${r.ratioToA.openP99DeltaMs >= 0 ? '+' : ''}${fmt(r.ratioToA.openP99DeltaMs, 3)}`,
      fmt(r.cpuSecondsPer1k, 4),
      fmt(r.ratioToA.cpuSecondsPer1k, 2),
      `${fmt(r.serverCoreUse, 2)} / ${fmt(r.loadCoreUse, 2)}`,
      fmt(r.peakRssMiB, 0),
    ]);
  }
  return lines.map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

export function renderTargets(targets: readonly TargetResult[]): string {
  const lines = [['target', 'measured', 'met'], ['---', '---', '---']];
  for (const t of targets) lines.push([t.target, t.measured, t.met ? 'yes' : 'NO']);
  return lines.map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * Two horizontal bar panels side by side: throughput at saturation and p99 latency at the fixed
 * rate, one bar per scenario, with A's value marked as a dashed line across each panel.
 */
export function renderSvg(rows: readonly ScenarioSummary[], rate: number, subtitle: string): string {
  const labelWidth = 250;
  const panelWidth = 300;
  const gap = 40;
  const barHeight = 16;
  const rowHeight = 24;
  const top = 64;
  const height = top + rows.length * rowHeight + 30;
  const width = labelWidth + 2 * panelWidth + gap + 70;
  const baseline = rows.find((r) => r.id === 'A');
  const panels = [
    { title: 'calls/s at saturation (higher is better)', value: (r: ScenarioSummary) => r.callsPerSecond, digits: 0, x: labelWidth },
    {
      title: `p99 ms at ${rate} calls/s offered (lower is better)`,
      value: (r: ScenarioSummary) => r.openLatencyMs.p99,
      digits: 2,
      x: labelWidth + panelWidth + gap,
    },
  ];
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">twokey authorization cost vs plain grpc-js over mTLS (A)</text>`,
    `<text x="10" y="38" fill="#555">${escapeXml(subtitle)}</text>`,
  ];
  for (const panel of panels) {
    const values = rows.map(panel.value).filter((v) => Number.isFinite(v));
    const max = Math.max(...values, 1e-9) * 1.1;
    const scale = (v: number): number => (Number.isFinite(v) ? (v / max) * (panelWidth - 60) : 0);
    out.push(`<text x="${panel.x}" y="${top - 10}" font-weight="bold">${escapeXml(panel.title)}</text>`);
    rows.forEach((r, i) => {
      const y = top + i * rowHeight;
      const v = panel.value(r);
      const fill = r.id === 'A' ? '#7a7a7a' : '#2f6db5';
      out.push(`<rect x="${panel.x}" y="${y}" width="${scale(v).toFixed(1)}" height="${barHeight}" fill="${fill}"/>`);
      out.push(`<text x="${(panel.x + scale(v) + 4).toFixed(1)}" y="${y + 12}">${fmt(v, panel.digits)}</text>`);
    });
    if (baseline !== undefined && Number.isFinite(panel.value(baseline))) {
      const x = panel.x + scale(panel.value(baseline));
      out.push(
        `<line x1="${x.toFixed(1)}" y1="${top - 4}" x2="${x.toFixed(1)}" y2="${top + rows.length * rowHeight}" stroke="#7a7a7a" stroke-dasharray="4 3"/>`,
      );
    }
  }
  // The label column is 250 px wide: about 40 characters at this size.
  const short = (text: string): string => (text.length > 40 ? `${text.slice(0, 39)}…` : text);
  rows.forEach((r, i) => {
    out.push(`<text x="10" y="${top + i * rowHeight + 12}">${escapeXml(short(`${r.id} ${r.label}`))}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
