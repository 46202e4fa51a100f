// Checks the documentation as a reader meets it: README.md stays a short front door, and every
// relative link in README.md and docs/*.md reaches a file (and heading) that exists.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { expect } from 'chai';
import { PACKAGE_ROOT } from '../../services/authz/package-root.ts';

const README_MAX_LINES = 300;
// Pages another change of the same issue writes; a link to one is checked once the page exists.
const PENDING_PAGES = new Set(['docs/layout.md']);

const pages = ['README.md', ...readdirSync(join(PACKAGE_ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** The text outside fenced code blocks, where Markdown links are links. */
function prose(text: string): string {
  return text.replace(/^```[\s\S]*?^```/gm, '');
}

/** GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens. */
export function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, '')
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

function anchorsOf(file: string): Set<string> {
  const headings = [...prose(readFileSync(file, 'utf8')).matchAll(/^#{1,6} (.+)$/gm)].map((m) => anchorOf(m[1]!));
  return new Set(headings);
}

describe('docs: the front door and the links between pages', () => {
  it(`README.md has at most ${README_MAX_LINES} lines`, () => {
    const lines = readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8').split('\n').length;
    expect(lines).to.be.at.most(README_MAX_LINES);
  });

  it('the index lists every page of docs/', () => {
    const index = readFileSync(join(PACKAGE_ROOT, 'docs', 'README.md'), 'utf8');
    for (const page of pages.filter((p) => p.startsWith('docs/') && p !== 'docs/README.md')) {
      expect(index, `docs/README.md links ${page}`).to.contain(`](${page.slice('docs/'.length)})`);
    }
  });

  it('every page with code says it is ESM and needs Node.js 24', () => {
    for (const page of pages) {
      const text = readFileSync(join(PACKAGE_ROOT, page), 'utf8');
      if (!text.includes('```')) continue;
      expect(text, `${page} states ESM`).to.contain('"type": "module"');
      expect(text, `${page} states Node.js 24`).to.match(/Node(\.js)? 24/);
    }
  });

  for (const page of pages) {
    it(`${page}: every relative link reaches an existing file and heading`, () => {
      const from = join(PACKAGE_ROOT, page);
      const broken: string[] = [];
      for (const m of prose(readFileSync(from, 'utf8')).matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/i.test(target)) continue; // https:, mailto:
        const [path, anchor] = target.split('#') as [string, string | undefined];
        const file = path === '' ? from : join(dirname(from), path);
        const rel = relative(PACKAGE_ROOT, file);
        if (!existsSync(file)) {
          if (!PENDING_PAGES.has(rel)) broken.push(`${target} (no file ${rel})`);
          continue;
        }
        if (anchor !== undefined && !anchorsOf(file).has(anchor)) broken.push(`${target} (no heading #${anchor} in ${rel})`);
      }
      expect(broken, `broken links in ${page}`).to.deep.equal([]);
    });
  }
});
