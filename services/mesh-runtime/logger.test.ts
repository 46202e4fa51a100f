// The asynchronous service logger loses no line on a clean stop, whether by flush or by process exit,
// writes lines longer than one write whole, keeps serving while its reader is slow, and survives
// a reader that goes away.
import { execFileSync, spawn } from 'node:child_process';
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
    // Every 1000th line is longer than a pipe's atomic write (4 KiB).
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

  /** A child that logs `lines` lines to its stdout, says "logged" on stderr, flushes, then says "flushed". */
  function loggingChild(lines: number): string {
    return `
      const { createLogger, flushLogger } = await import(${JSON.stringify(LOGGER)});
      const logger = createLogger('t');
      for (let i = 0; i < ${lines}; i++) {
        logger.info({ event: 'authz.decision', n: i, pad: 'x'.repeat(300) }, 'line');
        if (i % 500 === 0) await new Promise((r) => setImmediate(r));
      }
      process.stderr.write('logged\\n');
      await flushLogger(logger);
      process.stderr.write('flushed\\n');
    `;
  }

  function spawnLogger(lines: number) {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', loggingChild(lines)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const said = (word: string): Promise<void> =>
      new Promise((resolve) => {
        const poll = setInterval(() => {
          if (stderr.includes(word) || child.exitCode !== null) {
            clearInterval(poll);
            resolve();
          }
        }, 10);
      });
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
    return { child, said, exited, stderr: () => stderr };
  }

  it('keeps the event loop serving while its pipe reader stalls, then delivers every line in order', async () => {
    const lines = 20_000; // about 8 MB: far more than a pipe buffer holds
    const { child, said, exited, stderr } = spawnLogger(lines);
    const chunks: Buffer[] = [];
    // Not reading until the child has logged everything: a logger that blocked on the full pipe
    // would never get there, and this test would time out.
    child.stdout.pause();
    await said('logged');
    expect(stderr()).to.contain('logged');
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    child.stdout.resume();
    expect(await exited).to.equal(0);
    expect(stderr()).to.contain('flushed');
    const got = Buffer.concat(chunks).toString().split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { n: number }).n);
    expect(got).to.have.length(lines);
    expect(got.every((n, i) => n === i), 'lines in order').to.equal(true);
  });

  it('keeps running, and its flush completes, after its reader has gone away', async () => {
    const { child, said, exited, stderr } = spawnLogger(20_000);
    // Read one chunk, then close the pipe: the logger's next writes fail with EPIPE.
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.stdout.destroy();
    await said('flushed');
    expect(await exited).to.equal(0);
    expect(stderr()).to.contain('logged');
    expect(stderr()).to.contain('flushed');
  });
});
