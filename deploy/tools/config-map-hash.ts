// The name suffix kustomize gives generated ConfigMaps, computed the way kustomize computes it.
import { createHash } from 'node:crypto';

/**
 * kustomize hashes `{"data":...,"kind":"ConfigMap","name":""}` with Go's json.Marshal: keys
 * sorted, and <, >, & and U+2028/U+2029 escaped (Go's HTML-safe default). The name is empty
 * because kustomize looks it up with a path that never matches; matching that keeps the suffix
 * identical to what `kubectl apply -k` produces.
 */
export function configMapHashInput(data: Readonly<Record<string, string>>): string {
  const sorted: Record<string, string> = {};
  for (const key of Object.keys(data).sort(compareBytes)) sorted[key] = data[key]!;
  return goHtmlEscape(JSON.stringify({ data: sorted, kind: 'ConfigMap', name: '' }));
}

/** The 10-character suffix: SHA-256 hex, first 10 characters, with kustomize's letter swaps. */
export function configMapHashSuffix(data: Readonly<Record<string, string>>): string {
  return encodeHash(createHash('sha256').update(configMapHashInput(data), 'utf8').digest('hex'));
}

// Swaps that keep the suffix from reading as a number or a word (kubectl's hash encoding).
const SWAPS: Record<string, string> = { '0': 'g', '1': 'h', '3': 'k', a: 'm', e: 't' };

export function encodeHash(hex: string): string {
  return [...hex.slice(0, 10)].map((c) => SWAPS[c] ?? c).join('');
}

function goHtmlEscape(json: string): string {
  return json.replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// Go sorts map keys by bytes; for the ASCII keys ConfigMaps allow this equals code-unit order.
function compareBytes(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
