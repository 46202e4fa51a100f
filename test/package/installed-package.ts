// The package as another team gets it: packed from this repository, installed offline into an
// empty project outside it, with docs/adopting.md's mesh-member example written into that project.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { PACKAGE_ROOT } from '../../services/authz/package-root.ts';

const run = promisify(execFile);

export interface PackedFile {
  path: string;
  size: number;
}

export interface InstalledPackage {
  /** The consumer project: package.json, node_modules/twokey, and the files of docs/adopting.md. */
  project: string;
  tarball: string;
  tarballBytes: number;
  files: PackedFile[];
  /** What `npm ci` printed, scripts included. */
  installLog: string;
  /** The docs/adopting.md files written into the project, by path. */
  example: Map<string, string>;
}

/** Runs the npm on PATH (the Node it starts is the first on PATH too). */
export async function npm(args: string[], cwd: string, timeout = 180_000): Promise<{ stdout: string; stderr: string }> {
  return run('npm', args, { cwd, timeout, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_update_notifier: 'false' } });
}

/**
 * The code blocks of a docs page that open with a `// <path>` (or, YAML, `# <path>`) line, by
 * that path: the example files of docs/adopting.md, so the test runs exactly what the page shows.
 */
export function docFiles(page: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const match of page.matchAll(/```(?:js|proto|yaml)\n((?:\/\/|#) ([^\s]+)[^\n]*\n[\s\S]*?)```/g)) files.set(match[2]!, match[1]!);
  return files;
}

interface LockEntry {
  dev?: boolean;
  [field: string]: unknown;
}

/**
 * A lock file for the consumer project: the tarball plus the production dependencies at exactly
 * the versions this repository's lock file pins (its entries not marked dev), so `npm ci
 * --offline` installs them from the npm cache that this repository's own `npm ci` filled.
 */
function consumerLock(manifest: Record<string, any>, tarballName: string, integrity: string, grpcRange: string): object {
  const repoLock = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const packages: Record<string, unknown> = {
    '': { name: 'twokey-consumer', version: '1.0.0', dependencies: { '@grpc/grpc-js': grpcRange, twokey: `file:${tarballName}` } },
    'node_modules/twokey': {
      version: manifest.version,
      resolved: `file:${tarballName}`,
      integrity,
      license: manifest.license,
      dependencies: manifest.dependencies,
      bin: manifest.bin,
      engines: manifest.engines,
      peerDependencies: manifest.peerDependencies,
      peerDependenciesMeta: manifest.peerDependenciesMeta,
    },
  };
  for (const [path, entry] of Object.entries(repoLock.packages)) if (path !== '' && entry.dev !== true) packages[path] = entry;
  return { name: 'twokey-consumer', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

let installed: Promise<InstalledPackage> | undefined;

/** Packs and installs once per test process; later callers share the project, removed when the process exits. */
export function installedPackage(): Promise<InstalledPackage> {
  installed ??= install();
  return installed;
}

async function install(): Promise<InstalledPackage> {
  const root = mkdtempSync(join(tmpdir(), 'twokey-consumer-'));
  process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  const packDir = join(root, 'pack');
  const project = join(root, 'project');
  mkdirSync(packDir);
  mkdirSync(project);
  // `npm pack` runs prepack (the build) first; its output precedes the JSON report.
  const packed = await npm(['pack', '--json', '--pack-destination', packDir], PACKAGE_ROOT);
  const report = JSON.parse(packed.stdout.slice(packed.stdout.search(/^\[/m))) as Array<{ filename: string; integrity: string; files: PackedFile[] }>;
  const { filename, integrity, files } = report[0]!;
  const tarball = join(packDir, filename);
  const manifest = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as Record<string, any>;
  const grpcRange = manifest.dependencies['@grpc/grpc-js'] as string;
  writeFileSync(join(project, filename), readFileSync(tarball));
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'twokey-consumer', version: '1.0.0', private: true, type: 'module', dependencies: { '@grpc/grpc-js': grpcRange, twokey: `file:${filename}` } }, null, 2));
  writeFileSync(join(project, 'package-lock.json'), JSON.stringify(consumerLock(manifest, filename, integrity, grpcRange), null, 2));
  let installLog: string;
  try {
    const out = await npm(['ci', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', '--loglevel', 'info'], project);
    installLog = out.stdout + out.stderr;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`offline install of the tarball failed (run 'npm ci' in the repository first, which fills the npm cache):\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  const example = docFiles(readFileSync(join(PACKAGE_ROOT, 'docs', 'adopting.md'), 'utf8'));
  for (const [path, text] of example) {
    mkdirSync(dirname(join(project, path)), { recursive: true });
    writeFileSync(join(project, path), text);
  }
  return { project, tarball, tarballBytes: statSync(tarball).size, files, installLog, example };
}
