// No import circles in services/, certs-ca/ or scripts/: type-only, re-export and dynamic imports count too.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { expect } from 'chai';
import ts from 'typescript';
import { PACKAGE_ROOT } from '../../services/authz/package-root.ts';

const ROOTS = ['services', 'certs-ca', 'scripts'];

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    if (e.name === 'node_modules') return [];
    const path = join(dir, e.name);
    return e.isDirectory() ? tsFiles(path) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** file -> the repository files it imports, by every form the compiler sees (import, import type, export from, import()). */
function importGraph(roots: readonly string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const pending = roots.flatMap((r) => tsFiles(join(PACKAGE_ROOT, r)));
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (graph.has(file)) continue;
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const targets = info.importedFiles
      .map((f) => f.fileName)
      .filter((name) => name.startsWith('.'))
      .map((name) => resolve(dirname(file), name))
      .filter((target) => target.endsWith('.ts'));
    graph.set(file, [...new Set(targets)]);
    pending.push(...targets);
  }
  return graph;
}

/** Every strongly connected component with more than one file, or a file importing itself (Tarjan). */
export function importCircles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let index = 0;
  const order = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const circles: string[][] = [];
  const visit = (v: string): void => {
    order.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!order.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, order.get(w)!));
      }
    }
    if (low.get(v) === order.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) circles.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!order.has(v)) visit(v);
  return circles;
}

describe('layout: import circles', () => {
  it('finds a circle when there is one (type-only and dynamic imports included)', () => {
    const dir = PACKAGE_ROOT;
    const at = (name: string) => join(dir, name);
    const graph = new Map([
      [at('a.ts'), [at('b.ts')]],
      [at('b.ts'), [at('c.ts')]],
      [at('c.ts'), [at('a.ts')]],
      [at('d.ts'), [at('d.ts')]],
      [at('e.ts'), [at('a.ts')]],
    ]);
    const found = importCircles(graph).map((c) => c.map((f) => relative(dir, f)).join(' -> ')).sort();
    expect(found).to.deep.equal(['a.ts -> b.ts -> c.ts', 'd.ts']);
    // The parser sees every import form the compiler does.
    const seen = ts
      .preProcessFile("import type { A } from './a.ts';\nexport { B } from './b.ts';\nconst c = () => import('./c.ts');\nimport './d.ts';\n", true, true)
      .importedFiles.map((f) => f.fileName);
    expect(seen.sort()).to.deep.equal(['./a.ts', './b.ts', './c.ts', './d.ts']);
  });

  it('services/, certs-ca/ and scripts/ have none', () => {
    const graph = importGraph(ROOTS);
    const edges = [...graph.values()].reduce((n, targets) => n + targets.length, 0);
    // Not vacuous: the graph is the whole code base (157 files under the roots and 579 relative
    // imports when this was written).
    expect(graph.size, 'files read').to.be.above(120);
    expect(edges, 'imports followed').to.be.above(400);
    expect([...graph.keys()].some((f) => f.endsWith(join('services', 'mesh-runtime', 'serve-command.ts')))).to.equal(true);
    const circles = importCircles(graph).map((c) => c.map((f) => relative(PACKAGE_ROOT, f)).join(' -> '));
    expect(circles, 'import circles').to.deep.equal([]);
  });
});
