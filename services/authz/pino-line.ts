// Writes a JSON line exactly as a pino logger would, from fields the caller serialized itself.
import { pino, type Logger } from 'pino';

// pino.symbols is pino's published handle on a logger's line framing (level prefix, time, bindings,
// destination); reading it lets a line written on every call skip pino's generic object walk.
const sym = pino.symbols as typeof pino.symbols & { readonly msgPrefixSym: symbol };
type Internals = Record<symbol, any>;

/**
 * One logger's line at one level and message: `{"level":N,"time":...<bindings><fields>,"msg":...}`.
 * Exists only for loggers that write lines unchanged (see `of`); fields must be JSON members, each
 * preceded by a comma, with no key of the logger's bindings among them.
 */
export class PinoLineWriter {
  readonly #logger: Logger & Internals;
  readonly #level: string;
  readonly #levelValue: number;
  readonly #tail: string;

  private constructor(logger: Logger & Internals, level: string, levelValue: number, tail: string) {
    this.#logger = logger;
    this.#level = level;
    this.#levelValue = levelValue;
    this.#tail = tail;
  }

  /**
   * A writer for `logger.<level>(fields, msg)`, or undefined when the logger would change the line
   * on its way out (a mixin, formatters.log, hooks, redaction, serializers of these keys, a nested
   * key, a message prefix, a destination that wants per-line metadata): those go through pino.
   */
  static of(logger: Logger, level: string, msg: string, keys: readonly string[]): PinoLineWriter | undefined {
    const l = logger as Logger & Internals;
    const levelValue: unknown = logger.levels.values[level];
    const serializers = (l[sym.serializersSym] ?? {}) as Record<string, unknown>;
    const plain =
      typeof levelValue === 'number' &&
      typeof l[sym.lsCacheSym]?.[levelValue] === 'string' &&
      typeof l[sym.timeSym] === 'function' &&
      typeof l[sym.endSym] === 'string' &&
      typeof l[sym.messageKeySym] === 'string' &&
      l[sym.mixinSym] === undefined &&
      l[sym.formattersSym]?.log === undefined &&
      l[sym.hooksSym]?.logMethod === undefined &&
      l[sym.hooksSym]?.streamWrite === undefined &&
      Reflect.ownKeys(l[sym.stringifiersSym] ?? {}).length === 0 &&
      !keys.some((k) => k in serializers) &&
      !(l[sym.nestedKeySym]) &&
      l[sym.msgPrefixSym] === undefined &&
      l[sym.streamSym]?.[sym.needsMetadataGsym] !== true;
    if (!plain) return undefined;
    return new PinoLineWriter(l, level, levelValue, `,${JSON.stringify(l[sym.messageKeySym])}:${JSON.stringify(msg)}${l[sym.endSym]}`);
  }

  /** Writes one line unless the logger's level is above this writer's (as pino's own methods skip it). */
  write(fields: string): void {
    const l = this.#logger;
    if (!l.isLevelEnabled(this.#level)) return;
    l[sym.streamSym].write(l[sym.lsCacheSym][this.#levelValue] + l[sym.timeSym]() + l[sym.chindingsSym] + fields + this.#tail);
  }
}
