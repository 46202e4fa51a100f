// A strict parser of the Prometheus text exposition format (0.0.4): what a scrape of /metrics must parse as.
// Strict where Prometheus is lenient: a sample needs its family's TYPE first, a series appears once,
// histogram buckets are cumulative and end at +Inf, which equals _count.

export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  readonly type: MetricType;
  help: string | undefined;
  readonly samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES: readonly string[] = ['counter', 'gauge', 'histogram', 'summary', 'untyped'];

export class ExpositionError extends Error {
  constructor(line: number, message: string) {
    super(`line ${line}: ${message}`);
  }
}

/** Parses a whole exposition; throws ExpositionError naming the line of the first problem. */
export function parseExposition(text: string): Map<string, MetricFamily> {
  if (text !== '' && !text.endsWith('\n')) throw new ExpositionError(0, 'the exposition must end with a newline');
  const families = new Map<string, MetricFamily>();
  const seriesSeen = new Set<string>();
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, i) => {
    const n = i + 1;
    if (line === '') return;
    if (line.startsWith('#')) return parseComment(line, n, families);
    const sample = parseSample(line, n);
    const family = familyOf(sample.name, families);
    if (family === undefined) throw new ExpositionError(n, `sample ${sample.name} has no # TYPE line before it`);
    const series = sample.name + JSON.stringify(Object.entries(sample.labels).sort(([a], [b]) => (a < b ? -1 : 1)));
    if (seriesSeen.has(series)) throw new ExpositionError(n, `series ${series} appears twice`);
    seriesSeen.add(series);
    family.samples.push(sample);
  });
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

function parseComment(line: string, n: number, families: Map<string, MetricFamily>): void {
  const m = /^# (HELP|TYPE) ([^ ]+)(?: (.*))?$/.exec(line);
  if (m === null) return; // any other comment
  const [, kind, name, rest = ''] = m as unknown as [string, string, string, string | undefined];
  if (!METRIC_NAME.test(name)) throw new ExpositionError(n, `bad metric name ${JSON.stringify(name)}`);
  if (kind === 'TYPE') {
    if (!TYPES.includes(rest)) throw new ExpositionError(n, `bad type ${JSON.stringify(rest)}`);
    const existing = families.get(name);
    if (existing !== undefined && existing.samples.length > 0) throw new ExpositionError(n, `# TYPE for ${name} after its samples`);
    if (existing !== undefined && existing.type !== 'untyped') throw new ExpositionError(n, `second # TYPE for ${name}`);
    families.set(name, { name, type: rest as MetricType, help: existing?.help, samples: [] });
    return;
  }
  const help = unescapeHelp(rest, n);
  const family = families.get(name);
  if (family === undefined) families.set(name, { name, type: 'untyped', help, samples: [] });
  else if (family.help !== undefined) throw new ExpositionError(n, `second # HELP for ${name}`);
  else family.help = help;
}

function unescapeHelp(text: string, n: number): string {
  return text.replace(/\\(.?)/g, (_, c: string) => {
    if (c === '\\') return '\\';
    if (c === 'n') return '\n';
    throw new ExpositionError(n, `bad escape \\${c} in HELP`);
  });
}

function parseSample(line: string, n: number): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{|\s)/.exec(line);
  if (m === null) throw new ExpositionError(n, `not a sample: ${JSON.stringify(line)}`);
  const name = m[1]!;
  let pos = name.length;
  const labels: Record<string, string> = {};
  if (line[pos] === '{') {
    pos += 1;
    while (line[pos] !== '}') {
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(pos));
      if (lm === null || !LABEL_NAME.test(lm[1]!)) throw new ExpositionError(n, `bad label at column ${pos + 1}`);
      const label = lm[1]!;
      if (label in labels) throw new ExpositionError(n, `label ${label} given twice`);
      pos += lm[0].length;
      let value = '';
      for (;;) {
        const c = line[pos];
        if (c === undefined) throw new ExpositionError(n, 'unterminated label value');
        pos += 1;
        if (c === '"') break;
        if (c !== '\\') {
          value += c;
          continue;
        }
        const e = line[pos];
        pos += 1;
        if (e === '\\') value += '\\';
        else if (e === '"') value += '"';
        else if (e === 'n') value += '\n';
        else throw new ExpositionError(n, `bad escape \\${e ?? ''} in label ${label}`);
      }
      labels[label] = value;
      if (line[pos] === ',') pos += 1;
      else if (line[pos] !== '}') throw new ExpositionError(n, `expected , or } after label ${label}`);
    }
    pos += 1;
  }
  const rest = line.slice(pos);
  const vm = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
  if (vm === null) throw new ExpositionError(n, `bad value part ${JSON.stringify(rest)}`);
  return { name, labels, value: parseValue(vm[1]!, n) };
}

function parseValue(text: string, n: number): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new ExpositionError(n, `bad value ${JSON.stringify(text)}`);
  return Number(text);
}

function familyOf(sampleName: string, families: Map<string, MetricFamily>): MetricFamily | undefined {
  const direct = families.get(sampleName);
  if (direct !== undefined && direct.type !== 'histogram' && direct.type !== 'summary') return direct;
  const m = /^(.*)_(bucket|sum|count)$/.exec(sampleName);
  if (m === null) return undefined;
  const family = families.get(m[1]!);
  if (family === undefined) return undefined;
  if (family.type === 'histogram') return family;
  if (family.type === 'summary' && m[2] !== 'bucket') return family;
  return undefined;
}

/** Per label set (without le): buckets non-decreasing, a +Inf bucket, and +Inf == _count. */
function checkHistogram(family: MetricFamily): void {
  const groups = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>();
  for (const s of family.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1)));
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = { buckets: [] }));
    if (s.name.endsWith('_bucket')) {
      if (le === undefined) throw new ExpositionError(0, `${family.name}: a bucket without le`);
      g.buckets.push([parseValue(le, 0), s.value]);
    } else if (s.name.endsWith('_count')) g.count = s.value;
    else g.sum = s.value;
  }
  for (const [key, g] of groups) {
    const sorted = [...g.buckets].sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]![1] < sorted[i - 1]![1]) throw new ExpositionError(0, `${family.name}${key}: buckets are not cumulative`);
    }
    const last = sorted.at(-1);
    if (last === undefined || last[0] !== Infinity) throw new ExpositionError(0, `${family.name}${key}: no +Inf bucket`);
    if (g.count === undefined || g.sum === undefined) throw new ExpositionError(0, `${family.name}${key}: _count or _sum missing`);
    if (last[1] !== g.count) throw new ExpositionError(0, `${family.name}${key}: +Inf bucket ${last[1]} != _count ${g.count}`);
  }
}

/** The samples of one metric (a family's own name, or a histogram's _bucket/_sum/_count). */
export function samplesOf(families: Map<string, MetricFamily>, name: string): Sample[] {
  const family = familyOf(name, families);
  return family === undefined ? [] : family.samples.filter((s) => s.name === name);
}
