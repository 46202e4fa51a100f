// Tests that the Dockerfile agrees with the manifests: user, ports, entry point, build context.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { loadRegistry } from '../../certs-ca/index.ts';
import { workloadsOf } from '../tools/cross-reference.ts';
import { renderKustomization } from '../tools/kustomize.ts';
import type { JsonObject } from '../tools/manifest.ts';
import { containersOf, objects, podSpecOf } from '../tools/pod-spec.ts';
import { DEPLOY_DIR, REGISTRY_FILE, REPO, SERVICES_DIR } from './paths.ts';

// No container engine runs here, so the image is checked as text against the manifests it must
// agree with: the user it runs as, the ports, the entry point and what enters the build context.

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions per stage, continuation lines joined, comments dropped. */
function stages(text: string): Instruction[][] {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const out: Instruction[][] = [];
  for (const line of lines) {
    const [op, ...rest] = line.split(/\s+/);
    const instruction = { op: op!.toUpperCase(), args: rest.join(' ') };
    if (instruction.op === 'FROM') out.push([]);
    if (out.length === 0) {
      expect(instruction.op, 'only ARG may come before the first FROM').to.equal('ARG');
      continue;
    }
    out.at(-1)!.push(instruction);
  }
  return out;
}

function ignored(path: string, patterns: readonly string[]): boolean {
  return patterns.some((p) => {
    if (p.startsWith('**/*')) return path.endsWith(p.slice(4));
    if (p.startsWith('*')) return !path.includes('/') && path.endsWith(p.slice(1));
    return path === p || path.startsWith(`${p}/`);
  });
}

describe('deploy: the container image', () => {
  const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
  const ignore = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const all = stages(dockerfile);
  const final = all.at(-1)!;
  const pods = workloadsOf(renderKustomization(DEPLOY_DIR));

  it('is multi-stage: the install and the TypeScript build stay in the build stage, which keeps only production dependencies', () => {
    expect(all.length).to.be.greaterThanOrEqual(2);
    const build = all.slice(0, -1).flat();
    const runs = build.filter((i) => i.op === 'RUN').map((i) => i.args);
    expect(runs.some((r) => r.includes('npm ci'))).to.equal(true);
    expect(runs.some((r) => r.includes('npm run build') && r.includes('npm prune --omit=dev'))).to.equal(true);
    // No dependency builds native code, so the image needs no compilers.
    expect(runs.some((r) => /apt-get install/.test(r))).to.equal(false);
    expect(final.filter((i) => i.op === 'RUN')).to.deep.equal([]);
    const copies = final.filter((i) => i.op === 'COPY');
    expect(copies.every((c) => c.args.startsWith('--from=build '))).to.equal(true);
    // Same base image in every stage: what is built is what runs.
    expect(new Set(all.map((s) => s[0]!.args.split(' ')[0]))).to.deep.equal(new Set(['${NODE_IMAGE}']));
    expect(dockerfile).to.match(/^ARG NODE_IMAGE=node:24-/m);
  });

  it("keeps the example services' own dependencies, which the package lists only as devDependencies", () => {
    const manifest = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
    const imported = new Set<string>();
    for (const service of ['gateway', 'image-store', 'tagging', 'cleaner']) {
      const dir = join(SERVICES_DIR, service);
      for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))) {
        for (const m of readFileSync(join(dir, file), 'utf8').matchAll(/from '([^.'][^']*)'/g)) imported.add(m[1]!.split('/')[0]!);
      }
    }
    const devOnly = [...imported].filter((name) => name in manifest.devDependencies);
    expect(devOnly, 'example-only dependencies').to.deep.equal(['exifr']);
    const build = all.slice(0, -1).flat().filter((i) => i.op === 'RUN').map((i) => i.args).join(' && ');
    for (const dep of devOnly) {
      // Moved aside before the prune and back after it.
      const aside = build.indexOf(`mv node_modules/${dep} `);
      const prune = build.indexOf('npm prune --omit=dev');
      expect(aside, `${dep} kept aside`).to.be.within(0, prune);
      expect(build.slice(prune)).to.match(/mv \/tmp\/example-deps\/\* node_modules\//);
    }
  });

  it('runs as the non-root uid and gid every pod declares', () => {
    const user = final.filter((i) => i.op === 'USER').at(-1)?.args;
    expect(user).to.match(/^[1-9][0-9]*:[1-9][0-9]*$/);
    const [uid, gid] = user!.split(':').map(Number);
    for (const w of pods) {
      const sc = podSpecOf(w)!['securityContext'] as JsonObject;
      expect([sc['runAsUser'], sc['runAsGroup']], w.metadata.name).to.deep.equal([uid, gid]);
    }
  });

  it('starts `twokey serve`, and every pod names a service that exists as its argument', () => {
    const entry = final.find((i) => i.op === 'ENTRYPOINT')!.args;
    expect(JSON.parse(entry)).to.deep.equal(['node', 'dist/scripts/twokey.js', 'serve']);
    const names = loadRegistry(REGISTRY_FILE).workloads.map((w) => w.name);
    for (const w of pods) {
      const args = containersOf(podSpecOf(w)!)[0]!['args'] as string[];
      expect(args).to.have.length(1);
      expect(names).to.include(args[0]);
      expect(existsSync(join(SERVICES_DIR, args[0]!, 'main.ts')), args[0]).to.equal(true);
    }
  });

  it('exposes exactly the ports the pods declare', () => {
    const exposed = final.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map(Number)).sort();
    const declared = [...new Set(pods.flatMap((w) => containersOf(podSpecOf(w)!).flatMap((c) => objects(c, 'ports').map((p) => p['containerPort'] as number))))].sort();
    expect(exposed).to.deep.equal(declared);
  });

  it('copies only sources that exist and the build context keeps, never the CA or test files', () => {
    for (const copy of all.flat().filter((i) => i.op === 'COPY' && !i.args.startsWith('--from'))) {
      const sources = copy.args.split(/\s+/).slice(0, -1);
      for (const source of sources) {
        expect(existsSync(join(REPO, source)), source).to.equal(true);
        expect(ignored(source, ignore), `${source} is excluded by .dockerignore`).to.equal(false);
      }
    }
    for (const secret of ['.twokey', '.twokey/ca/ca.key', 'services/x/svid.key', 'deploy/registry.yaml', 'node_modules', '.git', 'services/authz/grant.test.ts']) {
      expect(ignored(secret, ignore), secret).to.equal(true);
    }
  });
});
