// The console's HTTPS server: login, the policy graph, certificates and live decisions; read-only.
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { packagePath } from '../../services/authz/package-root.ts';
import type { ConsoleDecision, DecisionFeed } from './decision-feed.ts';
import type { LoginResult } from './console-login.ts';
import { readCertificate, type PolicyGraph } from './policy-graph.ts';
import { CONSOLE_SCOPE, SESSION_COOKIE, sessionIdFrom, type Session, type SessionStore } from './console-sessions.ts';

const STATIC_DIR = packagePath('scripts', 'console', 'static');

const STATIC_FILES: Record<string, string> = {
  '/static/console.js': 'text/javascript; charset=utf-8',
  '/static/console.css': 'text/css; charset=utf-8',
};

export interface ConsoleServerOptions {
  tls: { cert: Buffer; key: Buffer };
  host: string;
  port: number;
  graph: PolicyGraph;
  feed: DecisionFeed;
  sessions: SessionStore;
  login: (username: string, password: string) => Promise<LoginResult>;
  /** Where the issued workload certificates are, and the OID of their grants extension. */
  svidRoot: string;
  grantsOid: string;
  /** How often live pages get fresh edge counts. */
  countsIntervalMs?: number;
}

// No inline script or style anywhere: the page's code and looks come only from /static.
const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  // Not no-referrer: under it a browser sends "Origin: null" with the login form, and the origin check needs the real one.
  'referrer-policy': 'same-origin',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'strict-transport-security': 'max-age=31536000',
  'cache-control': 'no-store',
};

const LOGIN_MESSAGES: Record<string, string> = {
  refused: `Login failed: wrong username or password, or the user holds no ${CONSOLE_SCOPE} scope.`,
  throttled: 'Too many failed logins; wait a minute and retry.',
  unverified: 'The token auth issued did not verify against its published keys; is auth’s JWKS endpoint reachable?',
  origin: 'The login form must be sent from this console’s own page.',
  expired: 'Your session ended; log in again.',
};

const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const MAX_FORM_BYTES = 4096;
const MAX_STREAM_BUFFER = 1024 * 1024;

export class ConsoleServer {
  readonly #o: ConsoleServerOptions;
  readonly #server: Server;
  readonly #streams = new Set<ServerResponse>();
  readonly #appHtml: string;
  #origins = new Set<string>();

  constructor(opts: ConsoleServerOptions) {
    this.#o = opts;
    this.#appHtml = readFileSync(join(STATIC_DIR, 'index.html'), 'utf8');
    this.#server = createServer({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' }, (req, res) => {
      this.#handle(req, res).catch(() => {
        if (!res.headersSent) this.#send(res, 500, 'text/plain; charset=utf-8', 'internal error');
        else res.destroy();
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#o.port, this.#o.host, () => resolve());
    });
    const port = (this.#server.address() as AddressInfo).port;
    // The only names this server answers to: a page on another name (DNS rebinding) gets nothing.
    this.#origins = new Set(['127.0.0.1', 'localhost', '[::1]', this.#o.host.includes(':') ? `[${this.#o.host}]` : this.#o.host].map((h) => `${h}:${port}`));
    return `https://${this.#o.host === '127.0.0.1' ? 'localhost' : this.#o.host}:${port}/`;
  }

  async close(): Promise<void> {
    for (const s of this.#streams) s.end();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #send(res: ServerResponse, code: number, type: string, body: string, extra: Record<string, string | string[]> = {}): void {
    res.writeHead(code, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
    res.end(body);
  }

  #json(res: ServerResponse, code: number, value: unknown): void {
    this.#send(res, code, 'application/json; charset=utf-8', JSON.stringify(value));
  }

  #redirect(res: ServerResponse, to: string, extra: Record<string, string | string[]> = {}): void {
    this.#send(res, 303, 'text/plain; charset=utf-8', '', { location: to, ...extra });
  }

  #session(req: IncomingMessage): { id: string; session: Session } | undefined {
    const id = sessionIdFrom(req.headers.cookie);
    const session = this.#o.sessions.get(id);
    return session === undefined || id === undefined ? undefined : { id, session };
  }

  /** A state-changing request must come from this console's own page: Origin names it exactly. */
  #sameOrigin(req: IncomingMessage): boolean {
    const origin = req.headers.origin;
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return false;
    return origin !== undefined && origin === `https://${req.headers.host}`;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.#origins.has(req.headers.host ?? '')) return this.#send(res, 421, 'text/plain; charset=utf-8', 'unknown host name');
    const url = new URL(req.url ?? '/', 'https://console.invalid');
    const method = req.method ?? 'GET';
    const route = `${method} ${url.pathname}`;

    const type = STATIC_FILES[url.pathname];
    if (type !== undefined && method === 'GET') return this.#send(res, 200, type, readFileSync(join(STATIC_DIR, url.pathname.slice('/static/'.length)), 'utf8'));
    if (route === 'GET /login') return this.#loginPage(res, url.searchParams.get('error'));
    if (route === 'POST /login') return this.#loginPost(req, res);

    const current = this.#session(req);
    if (route === 'POST /logout') {
      if (!this.#sameOrigin(req)) return this.#send(res, 403, 'text/plain; charset=utf-8', 'cross-origin request refused');
      this.#o.sessions.delete(current?.id);
      return this.#redirect(res, '/login', { 'set-cookie': `${SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0` });
    }
    if (current === undefined) {
      if (route === 'GET /') return this.#redirect(res, '/login');
      return this.#json(res, 401, { error: 'log in first' });
    }
    switch (route) {
      case 'GET /':
        return this.#send(res, 200, 'text/html; charset=utf-8', this.#appHtml.replace('{{user}}', escapeHtml(current.session.subject)));
      case 'GET /api/graph':
        return this.#json(res, 200, { ...this.#o.graph, windowMs: this.#o.feed.windowMs, user: current.session.subject });
      case 'GET /api/certificate': {
        const name = url.searchParams.get('workload');
        // Only names the graph knows reach the file system: no path is built from anything else.
        if (name === null || !this.#o.graph.nodes.some((n) => n.name === name)) return this.#json(res, 404, { error: 'no such workload' });
        try {
          return this.#json(res, 200, readCertificate(this.#o.svidRoot, name, this.#o.grantsOid));
        } catch (err) {
          return this.#json(res, 404, { error: (err as Error).message });
        }
      }
      case 'GET /api/decisions':
        return this.#stream(req, res, current.id);
      default:
        return this.#json(res, 404, { error: 'not found' });
    }
  }

  #loginPage(res: ServerResponse, error: string | null): void {
    const message = error === null ? undefined : LOGIN_MESSAGES[error];
    const body = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>twokey console: log in</title><link rel="stylesheet" href="/static/console.css"></head>
<body class="login"><main><h1>twokey console</h1>
${message === undefined ? '' : `<p class="error" id="login-error">${escapeHtml(message)}</p>`}
<form method="post" action="/login" id="login-form">
<label>Username <input name="username" id="username" autocomplete="username" required maxlength="64"></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required maxlength="1024"></label>
<button type="submit" id="login-submit">Log in</button>
</form><p class="hint">An auth user whose role grants ${CONSOLE_SCOPE} (the local mesh prints one at start).</p></main></body></html>`;
    this.#send(res, 200, 'text/html; charset=utf-8', body);
  }

  async #loginPost(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.#sameOrigin(req)) return this.#redirect(res, '/login?error=origin');
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) return this.#send(res, 415, 'text/plain; charset=utf-8', 'send the login form');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_FORM_BYTES) return this.#send(res, 413, 'text/plain; charset=utf-8', 'login form too large', { connection: 'close' });
      chunks.push(chunk as Buffer);
    }
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    const result = await this.#o.login(form.get('username') ?? '', form.get('password') ?? '');
    if (!result.ok) return this.#redirect(res, `/login?error=${result.why}`);
    const { id, session } = this.#o.sessions.create(result.token.subject);
    const maxAge = Math.max(1, Math.floor((session.expiresAtMs - Date.now()) / 1000));
    return this.#redirect(res, '/', { 'set-cookie': `${SESSION_COOKIE}=${id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=${maxAge}` });
  }

  #stream(req: IncomingMessage, res: ServerResponse, sessionId: string): void {
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
    const send = (event: string, data: unknown): void => {
      // A page that stops reading is cut off rather than buffered for: it reconnects and gets the recent list.
      if (res.writableEnded) return;
      if (res.writableLength > MAX_STREAM_BUFFER) res.end();
      else res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    for (const d of this.#o.feed.recent()) send('decision', d);
    send('counts', this.#o.feed.counts());
    const unsubscribe = this.#o.feed.subscribe((d: ConsoleDecision) => send('decision', d));
    const timer = setInterval(() => {
      // A session that ended (expiry or logout) ends its stream too.
      if (this.#o.sessions.get(sessionId) === undefined) res.end();
      else send('counts', this.#o.feed.counts());
    }, this.#o.countsIntervalMs ?? 2000);
    this.#streams.add(res);
    const stop = (): void => {
      clearInterval(timer);
      unsubscribe();
      this.#streams.delete(res);
    };
    res.on('close', stop);
    req.on('close', stop);
  }
}
