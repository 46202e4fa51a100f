// Which engine holds a service's state: SQLite in its data directory, or PostgreSQL when
// TWOKEY_DATABASE_URL names one (replicas share it). The password never appears in the URL's logs.
import { readFileSync } from 'node:fs';
import { TwokeyError } from '../authz/errors.ts';
import type { Env } from './env.ts';

export interface PostgresConfig {
  /** The URL without its password: safe to log. */
  redactedUrl: string;
  /** The connection string handed to pg, password included. */
  connectionString: string;
}

/**
 * PostgreSQL settings from TWOKEY_DATABASE_URL (postgres:// or postgresql://), or undefined for
 * the SQLite default. The password comes from TWOKEY_DATABASE_PASSWORD_FILE (a mounted Secret)
 * when set; a password inside the URL is accepted too, as a Secret's whole value.
 */
export function postgresConfig(env: Env): PostgresConfig | undefined {
  const raw = env['TWOKEY_DATABASE_URL'];
  if (raw === undefined || raw === '') return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // The text may hold a password: never echoed.
    throw new TwokeyError('ERR_CONFIG_INVALID', 'TWOKEY_DATABASE_URL is not a URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_DATABASE_URL must be a postgres:// URL, not ${url.protocol}//`);
  }
  if (url.pathname.length <= 1) throw new TwokeyError('ERR_CONFIG_INVALID', 'TWOKEY_DATABASE_URL names no database (postgres://user@host:5432/dbname)');
  const passwordFile = env['TWOKEY_DATABASE_PASSWORD_FILE'];
  if (passwordFile !== undefined && passwordFile !== '') {
    let password: string;
    try {
      password = readFileSync(passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_DATABASE_PASSWORD_FILE ${passwordFile} cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    if (password === '') throw new TwokeyError('ERR_CONFIG_INVALID', `TWOKEY_DATABASE_PASSWORD_FILE ${passwordFile} is empty`);
    url.password = encodeURIComponent(password);
  }
  const connectionString = url.toString();
  const redacted = new URL(connectionString);
  if (redacted.password !== '') redacted.password = '***';
  return { connectionString, redactedUrl: redacted.toString() };
}
