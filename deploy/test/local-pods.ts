// Runs rendered pods as local processes, as a kubelet would set them up: each volume becomes a
// directory (Secrets and ConfigMaps in the kubelet's atomic symlink layout, owned as fsGroup makes
// them), each container port a free loopback port, each Service address the port of the pod it
// selects, and, when this runs as root, the process runs as the pod's uid and gid. Nothing is
// rewritten by hand: a wrong env name, port, path, address or permission shows up as a failing pod.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { freePortSource } from '../../scripts/local-mesh/ports.ts';
import { containerPorts, podLabels, selects, stringMap, targetContainerPort } from '../tools/cross-reference.ts';
import { isObject, type JsonObject, type K8sObject } from '../tools/manifest.ts';
import { containersOf, objects, podSpecOf, podTemplateOf, str } from '../tools/pod-spec.ts';
import { TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';

export interface LocalPod {
  name: string;
  /** The pod's runAsUser, runAsGroup and fsGroup, applied when this process may (root). */
  user: { uid: number; gid: number; fsGroup: number };
  /** Container port -> loopback port. */
  ports: Map<number, number>;
  /** Mount path in the container -> directory here. */
  mounts: Map<string, string>;
  env: Record<string, string>;
}

let generation = 0;

/**
 * Writes files the way the kubelet's atomic writer does: a timestamped directory, a `..data`
 * symlink swapped atomically to it, and one symlink per key through `..data`.
 */
export function writeAtomicVolume(dir: string, files: Record<string, Buffer>, mode: number, fsGroup?: number): void {
  mkdirSync(dir, { recursive: true });
  const stamp = `..${Date.now()}_${process.pid}_${generation++}`;
  mkdirSync(join(dir, stamp));
  for (const [key, content] of Object.entries(files)) {
    writeFileSync(join(dir, stamp, key), content);
    chmodSync(join(dir, stamp, key), mode);
    // The kubelet gives Secret and ConfigMap files to root and the pod's fsGroup.
    if (fsGroup !== undefined && asRoot()) chownSync(join(dir, stamp, key), 0, fsGroup);
  }
  symlinkSync(stamp, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  for (const key of Object.keys(files)) {
    try {
      symlinkSync(join('..data', key), join(dir, key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  for (const entry of readdirSync(dir)) {
    if (entry.startsWith('..') && entry !== '..data' && entry !== stamp) rmSync(join(dir, entry), { recursive: true, force: true });
  }
}

function find(objs: readonly K8sObject[], kind: string, name: string): K8sObject {
  const found = objs.find((o) => o.kind === kind && o.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name} in the rendered set`);
  return found;
}

function dataOf(obj: K8sObject, encoding: 'base64' | 'utf8'): Record<string, Buffer> {
  const data = isObject(obj['data']) ? obj['data'] : {};
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(String(v), encoding)]));
}

function asRoot(): boolean {
  return process.getuid?.() === 0;
}

/** A writable volume (emptyDir, PersistentVolumeClaim): group fsGroup, setgid, group-writable. */
function writableDir(dir: string, fsGroup: number): void {
  mkdirSync(dir, { recursive: true });
  if (asRoot()) {
    chownSync(dir, 0, fsGroup);
    chmodSync(dir, 0o2770);
  }
}

/** Directories for one pod's volumes, filled from the Secrets and ConfigMaps in `objs`. */
function prepareVolumes(objs: readonly K8sObject[], workload: K8sObject, root: string, fsGroup: number): Map<string, string> {
  const spec = podSpecOf(workload)!;
  const claims = new Set(objects(workload['spec'], 'volumeClaimTemplates').map((t) => str(t['metadata'], 'name')));
  const dirs = new Map<string, string>();
  for (const volume of objects(spec, 'volumes')) {
    const name = String(volume['name']);
    const dir = join(root, name);
    const secret = volume['secret'];
    const configMap = volume['configMap'];
    if (isObject(secret)) {
      writeAtomicVolume(dir, dataOf(find(objs, 'Secret', String(secret['secretName'])), 'base64'), (secret['defaultMode'] as number | undefined) ?? 0o644, fsGroup);
    } else if (isObject(configMap)) {
      writeAtomicVolume(dir, dataOf(find(objs, 'ConfigMap', String(configMap['name'])), 'utf8'), (configMap['defaultMode'] as number | undefined) ?? 0o644, fsGroup);
    } else if (isObject(volume['emptyDir'])) {
      writableDir(dir, fsGroup);
    } else {
      throw new Error(`${workload.metadata.name}: volume ${name} is of a kind this harness does not lay out`);
    }
    dirs.set(name, dir);
  }
  for (const claim of claims) {
    const dir = join(root, `pvc-${claim}`);
    writableDir(dir, fsGroup);
    dirs.set(String(claim), dir);
  }
  return dirs;
}

/** Lays out every workload's pod under `root` and assigns loopback ports. */
export async function preparePods(objs: readonly K8sObject[], root: string): Promise<LocalPod[]> {
  const workloads = objs.filter((o) => podTemplateOf(o) !== undefined);
  const pods: LocalPod[] = [];
  // Nothing binds these until the pods start: each must differ from every other.
  const nextPort = freePortSource();
  for (const w of workloads) {
    const container = containersOf(podSpecOf(w)!)[0]!;
    // The harness starts `twokey serve <name>`; the manifest must ask for exactly that.
    if (JSON.stringify(container['args']) !== JSON.stringify([w.metadata.name])) throw new Error(`${w.metadata.name}: args ${JSON.stringify(container['args'])}`);
    const sc = (podSpecOf(w)!['securityContext'] ?? {}) as JsonObject;
    const user = { uid: sc['runAsUser'] as number, gid: sc['runAsGroup'] as number, fsGroup: sc['fsGroup'] as number };
    if (![user.uid, user.gid, user.fsGroup].every((n) => Number.isInteger(n) && n > 0)) throw new Error(`${w.metadata.name}: runAsUser, runAsGroup and fsGroup must be set`);
    const ports = new Map<number, number>();
    for (const p of objects(container, 'ports')) ports.set(p['containerPort'] as number, await nextPort());
    mkdirSync(join(root, w.metadata.name), { recursive: true });
    const volumes = prepareVolumes(objs, w, join(root, w.metadata.name), user.fsGroup);
    const mounts = new Map<string, string>();
    for (const m of objects(container, 'volumeMounts')) {
      if (m['subPath'] !== undefined) throw new Error(`${w.metadata.name}: subPath mounts are not laid out`);
      mounts.set(String(m['mountPath']), volumes.get(String(m['name']))!);
    }
    pods.push({ name: w.metadata.name, user, ports, mounts, env: {} });
  }
  for (const pod of pods) {
    const w = workloads.find((o) => o.metadata.name === pod.name)!;
    const container = containersOf(podSpecOf(w)!)[0]!;
    for (const e of objects(container, 'env')) pod.env[String(e['name'])] = translate(String(e['value']), pod, pods, objs);
  }
  return pods;
}

/** A manifest env value, as it must read on this machine. */
function translate(value: string, pod: LocalPod, pods: readonly LocalPod[], objs: readonly K8sObject[]): string {
  const listen = /^0\.0\.0\.0:(\d+)$/.exec(value);
  if (listen !== null) {
    const port = pod.ports.get(Number(listen[1]));
    if (port === undefined) throw new Error(`${pod.name} listens on ${value}, a port its container does not declare`);
    return `127.0.0.1:${port}`;
  }
  const peer = /^([a-z0-9-]+):(\d+)$/.exec(value);
  if (peer !== null) return `127.0.0.1:${servicePort(peer[1]!, Number(peer[2]), pods, objs)}`;
  const mount = [...pod.mounts.keys()].filter((p) => value === p || value.startsWith(`${p}/`)).sort((a, b) => b.length - a.length)[0];
  if (mount !== undefined) return pod.mounts.get(mount)! + value.slice(mount.length);
  return value;
}

/** The loopback port behind `service:port`: the Service, the pod it selects, its target port. */
function servicePort(service: string, port: number, pods: readonly LocalPod[], objs: readonly K8sObject[]): number {
  const svc = find(objs, 'Service', service);
  const spec = svc['spec'] as JsonObject;
  const target = objs.find((o) => podTemplateOf(o) !== undefined && selects(stringMap(spec['selector']), podLabels(o)));
  const svcPort = objects(spec, 'ports').find((p) => p['port'] === port);
  if (target === undefined || svcPort === undefined) throw new Error(`Service ${service} has no port ${port} in front of a pod`);
  const containerPort = targetContainerPort(svcPort, containerPorts(target))?.containerPort;
  const local = containerPort === undefined ? undefined : pods.find((p) => p.name === target.metadata.name)!.ports.get(containerPort);
  if (local === undefined) throw new Error(`Service ${service}:${port} targets a port ${target.metadata.name} does not declare`);
  return local;
}

/**
 * The process environment of a pod's container: exactly its manifest env, plus what the image
 * sets (NODE_ENV, HOME) and its /tmp emptyDir as the temporary directory.
 */
export function podProcessEnv(pod: LocalPod): Record<string, string> {
  const tmp = pod.mounts.get('/tmp');
  if (tmp === undefined) throw new Error(`${pod.name} has no /tmp volume`);
  return { PATH: process.env['PATH'] ?? '/usr/bin:/bin', NODE_ENV: 'production', HOME: tmp, TMPDIR: tmp, ...pod.env };
}

/**
 * The first directory on the way to `path` that `uid`/`gid` may not search (by its mode bits), or
 * undefined. Only a hint for the message: whether the pod can reach the file is asked of the kernel.
 */
function firstUnsearchable(path: string, uid: number, gid: number): string | undefined {
  const chain: string[] = [];
  for (let dir = dirname(resolve(path)); ; dir = dirname(dir)) {
    chain.unshift(dir);
    if (dir === dirname(dir)) break;
  }
  for (const dir of chain) {
    const st = statSync(dir);
    const bit = st.uid === uid ? 0o100 : st.gid === gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) return `${dir} (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}:${st.gid})`;
  }
  return undefined;
}

/**
 * Why a process running as the pod's uid and gid could not start `node <TWOKEY_BIN>`, or undefined
 * when it can (always undefined unless this runs as root, when pods run as their own uid). Asked
 * of the kernel by starting node as that uid; run as root in a directory others cannot search (a
 * 0700 mktemp parent), a pod would otherwise fail with a misleading "Cannot find module", or,
 * when node itself is out of reach, with a spawn EACCES and no exit at all.
 */
export function podCannotRun(pod: Pick<LocalPod, 'name' | 'user'>, files: { node: string; bin: string } = { node: process.execPath, bin: TWOKEY_BIN }): string | undefined {
  if (!asRoot()) return undefined;
  const { uid, gid } = pod.user;
  const probe = spawnSync(files.node, ['-e', 'require("node:fs").accessSync(process.argv[1], require("node:fs").constants.R_OK)', files.bin], { uid, gid, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
  if (probe.error !== undefined) {
    const hint = firstUnsearchable(files.node, uid, gid);
    return `${pod.name} runs as uid ${uid} gid ${gid}, which cannot start node at ${files.node} (${(probe.error as NodeJS.ErrnoException).code ?? probe.error.message})${hint === undefined ? '' : `: ${hint} is not searchable by it`}`;
  }
  if (probe.status !== 0) {
    const hint = firstUnsearchable(files.bin, uid, gid);
    return `${pod.name} runs as uid ${uid} gid ${gid}, which cannot read ${files.bin}${hint === undefined ? '' : `: ${hint} is not searchable by it`} (${probe.stderr.toString().trim().split('\n')[0]})`;
  }
  return undefined;
}

/** Who a pod's processes run as here: its own uid and gid when this runs as root. */
export function podIdentity(pod: LocalPod): { uid?: number; gid?: number } {
  return asRoot() ? { uid: pod.user.uid, gid: pod.user.gid } : {};
}

export class RunningPods {
  readonly #children = new Map<string, ChildProcess>();
  readonly #exits = new Map<string, Promise<void>>();
  readonly unexpectedExits: string[] = [];
  #stopping = false;

  /** Starts every pod's service as `node dist/scripts/twokey.js serve <name>` (the compiled command, as in the image), logging to root/<name>.log. */
  constructor(pods: readonly LocalPod[], repo: string, root: string) {
    for (const pod of pods) {
      const logFile = join(root, `${pod.name}.log`);
      const log = openSync(logFile, 'a', 0o600);
      const child = spawn(process.execPath, [TWOKEY_BIN, 'serve', pod.name], {
        cwd: repo,
        env: { ...podProcessEnv(pod), TWOKEY_STOP_WITH_PARENT: '1' },
        ...podIdentity(pod),
        // stdin is a pipe only this process holds, so a child never outlives the test run.
        stdio: ['pipe', log, log],
      });
      closeSync(log);
      this.#children.set(pod.name, child);
      this.#exits.set(
        pod.name,
        new Promise((resolve) => {
          let ended = false;
          const end = (why: string): void => {
            if (ended) return;
            ended = true;
            if (!this.#stopping) this.unexpectedExits.push(`${pod.name} ${why}; see ${logFile}`);
            resolve();
          };
          child.once('exit', (code, signal) => end(`exited (${code ?? signal})`));
          // A child that could not be started (EACCES, ENOENT) emits only 'error', never 'exit': it counts as an exit.
          child.once('error', (err: NodeJS.ErrnoException) => end(`could not start (${err.code ?? err.message})`));
        }),
      );
    }
  }

  pid(name: string): number | undefined {
    return this.#children.get(name)?.pid;
  }

  /** SIGTERM to every pod, SIGKILL to any still running after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.#stopping = true;
    for (const child of this.#children.values()) child.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const child of this.#children.values()) child.kill('SIGKILL');
    }, graceMs);
    await Promise.all(this.#exits.values());
    clearTimeout(timer);
  }
}
