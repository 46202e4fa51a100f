// The asynchronous service logger loses no line on a clean stop, whether by flush or by process exit,
// and writes lines longer than one write whole.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { pino } from 'pino';
import { isoTimeEachMs } from './logger.ts';

const LOGGER = fileURLToPath(new URL('./logger.ts', import.meta.url));
const LINES = 20_000;

/** Runs a child process that logs LINES lines to `file`, then ends as `ending` says. */
function logInChild(file: string, ending: 'exit' | 'flush'): void {
  const script = `
    const { createLogger, flushLogger } = await import(${JSON.stringify(LOGGER)});
    const logger = createLogger('t', { dest: ${JSON.stringify(file)} });
    await new Promise((r) => setTimeout(r, 50)); // the file is open
    // Every 1000th line is longer than one write may carry (LOG_MAX_WRITE_BYTES).
    for (let i = 0; i < ${LINES}; i++) logger.info({ event: 'authz.decision', n: i, ...(i % 1000 === 0 ? { pad: 'x'.repeat(10_000) } : {}) }, 'line');
    ${ending === 'exit' ? 'process.exit(0);' : 'await flushLogger(logger); process.exitCode = 0;'}
  `;
  execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: 'inherit', timeout: 20_000 });
}

describe('service logger', () => {
  it("formats the time as pino's isoTime does, once per millisecond", () => {
    let now = Date.parse('2026-11-28T15:40:45.123Z');
    const time = isoTimeEachMs(() => now);
    expect(time()).to.equal(',"time":"2026-11-28T15:40:45.123Z"');
    expect(time()).to.equal(',"time":"2026-11-28T15:40:45.123Z"');
    now += 1;
    expect(time()).to.equal(',"time":"2026-11-28T15:40:45.124Z"');
    now = Date.now();
    const realNow = Date.now;
    try {
      Date.now = () => now;
      expect(time()).to.equal(pino.stdTimeFunctions.isoTime());
    } finally {
      Date.now = realNow;
    }
  });

  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'twokey-logger-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  for (const ending of ['exit', 'flush'] as const) {
    it(`writes every line, in order, when the process ends by ${ending === 'exit' ? 'process.exit() right after logging' : 'flushLogger()'}`, () => {
      const file = join(dir, 'out.log');
      logInChild(file, ending);
      const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
      expect(lines).to.have.length(LINES);
      const parsed = lines.map((l) => JSON.parse(l) as { n: number; pad?: string });
      expect(parsed.every((p, i) => p.n === i), 'lines in order').to.equal(true);
      const long = parsed.filter((p) => p.pad !== undefined);
      expect(long).to.have.length(LINES / 1000);
      expect(long.every((p) => p.pad!.length === 10_000 && p.n % 1000 === 0), 'long lines whole').to.equal(true);
    });
  }
});
