// RFC 6902 JSON Patch, applied to a copy: the patches kustomize overlays use (`patches:` lists).
import { TwokeyError } from '../../services/authz/errors.ts';
import { clone, isObject, type Json } from './manifest.ts';

export interface PatchOperation {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  path: string;
  value?: Json;
  from?: string;
}

const OPS = new Set(['add', 'remove', 'replace', 'move', 'copy', 'test']);

function fail(message: string): never {
  throw new TwokeyError('ERR_CONFIG_INVALID', `JSON patch: ${message}`);
}

/** Checks the shape of a parsed patch document (a list of operations). */
export function parsePatch(doc: unknown, where: string): PatchOperation[] {
  if (!Array.isArray(doc)) fail(`${where}: a patch must be a list of operations`);
  return doc.map((op, i) => {
    if (!isObject(op) || typeof op['op'] !== 'string' || !OPS.has(op['op'])) fail(`${where}[${i}]: op must be one of ${[...OPS].join(', ')}`);
    if (typeof op['path'] !== 'string') fail(`${where}[${i}]: path must be a string`);
    const needsValue = op['op'] === 'add' || op['op'] === 'replace' || op['op'] === 'test';
    if (needsValue && !('value' in op)) fail(`${where}[${i}]: ${op['op']} needs a value`);
    const needsFrom = op['op'] === 'move' || op['op'] === 'copy';
    if (needsFrom && typeof op['from'] !== 'string') fail(`${where}[${i}]: ${op['op']} needs from`);
    for (const key of Object.keys(op)) {
      if (!['op', 'path', 'value', 'from'].includes(key)) fail(`${where}[${i}]: unknown key ${JSON.stringify(key)}`);
    }
    return op as unknown as PatchOperation;
  });
}

/** RFC 6901 pointer -> reference tokens. */
function tokens(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) fail(`pointer ${JSON.stringify(pointer)} must start with "/"`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(token: string, length: number, allowEnd: boolean, pointer: string): number {
  if (allowEnd && token === '-') return length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) fail(`${JSON.stringify(pointer)}: ${JSON.stringify(token)} is not an array index`);
  const index = Number(token);
  if (index > length || (!allowEnd && index === length)) fail(`${JSON.stringify(pointer)}: index ${index} is out of range`);
  return index;
}

function get(doc: Json, pointer: string): Json {
  let node = doc;
  for (const token of tokens(pointer)) {
    if (Array.isArray(node)) node = node[arrayIndex(token, node.length, false, pointer)]!;
    else if (isObject(node) && Object.hasOwn(node, token)) node = node[token]!;
    else fail(`${JSON.stringify(pointer)} does not exist`);
  }
  return node;
}

/** The container of the last token, which must exist. */
function parentOf(doc: Json, pointer: string): { parent: Json; last: string } {
  const all = tokens(pointer);
  if (all.length === 0) fail('operations on the whole document are not supported');
  const last = all.pop()!;
  const parentPointer = all.map((t) => `/${t.replace(/~/g, '~0').replace(/\//g, '~1')}`).join('');
  return { parent: get(doc, parentPointer), last };
}

function add(doc: Json, pointer: string, value: Json): void {
  const { parent, last } = parentOf(doc, pointer);
  if (Array.isArray(parent)) parent.splice(arrayIndex(last, parent.length, true, pointer), 0, value);
  else if (isObject(parent)) parent[last] = value;
  else fail(`${JSON.stringify(pointer)}: parent is not an object or array`);
}

function remove(doc: Json, pointer: string): Json {
  const { parent, last } = parentOf(doc, pointer);
  if (Array.isArray(parent)) return parent.splice(arrayIndex(last, parent.length, false, pointer), 1)[0]!;
  if (isObject(parent) && Object.hasOwn(parent, last)) {
    const old = parent[last]!;
    delete parent[last];
    return old;
  }
  fail(`${JSON.stringify(pointer)} does not exist`);
}

// RFC 6902 §4.6: objects compare by members regardless of order.
function deepEqual(a: Json, b: Json): boolean {
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]!));
  if (isObject(a)) {
    if (!isObject(b)) return false;
    const keys = Object.keys(a);
    return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && deepEqual(a[k]!, b[k]!));
  }
  return a === b;
}

export function applyPatch<T extends Json>(doc: T, ops: readonly PatchOperation[]): T {
  const out = clone(doc);
  for (const op of ops) {
    switch (op.op) {
      case 'add':
        add(out, op.path, clone(op.value!));
        break;
      case 'remove':
        remove(out, op.path);
        break;
      case 'replace':
        remove(out, op.path);
        add(out, op.path, clone(op.value!));
        break;
      case 'move':
        add(out, op.path, remove(out, op.from!));
        break;
      case 'copy':
        add(out, op.path, clone(get(out, op.from!)));
        break;
      case 'test':
        if (!deepEqual(get(out, op.path), op.value!)) fail(`test failed at ${JSON.stringify(op.path)}`);
        break;
    }
  }
  return out;
}
