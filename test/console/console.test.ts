// The console against a running mesh, in headless Chromium: login, the policy graph, a workload's
// certificate, a denial arriving live with its reason, and visitors without a session refused.
import { X509Certificate, createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { expect } from 'chai';
import { startConsole, type RunningConsole } from '../../scripts/console/console-command.ts';
import { jpegWithGps } from '../../scripts/fixtures/gps-jpeg.ts';
import { unary } from '../../services/mesh-runtime/protos.ts';
import { expectStatus, startTestMesh, withToken, type TestMesh } from '../e2e/mesh-harness.ts';
import { requireSystem } from '../support/requires.ts';
import { Browser, CHROMIUM } from './chromium.ts';

const OUT = join(process.cwd(), 'test-output', 'console');

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A plain HTTPS request to the console, trusting its CA, with whatever headers a visitor sends. */
function visit(url: string, ca: Buffer, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    // The certificate is checked for localhost whatever Host header the visitor sends.
    const req = request(url, { ca, servername: 'localhost', checkServerIdentity: () => undefined, method: opts.method ?? 'GET', headers: opts.headers ?? {}, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      // An event stream never ends by itself: its status and headers are the answer.
      if ((res.headers['content-type'] ?? '').startsWith('text/event-stream')) {
        resolve({ status: res.statusCode!, headers: res.headers, body: '' });
        res.destroy();
        return;
      }
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('twokey console (headless Chromium against a running mesh)', function () {
  this.timeout(180_000);
  let harness: TestMesh;
  let web: RunningConsole;
  let browser: Browser | undefined;
  let ca: Buffer;

  before(async function () {
    requireSystem(this, 'chromium', existsSync(CHROMIUM) ? undefined : `no chromium at ${CHROMIUM} (install Debian's chromium, or set TWOKEY_CHROMIUM)`);
    rmSync(OUT, { recursive: true, force: true });
    mkdirSync(OUT, { recursive: true });
    harness = await startTestMesh();
    web = await startConsole({ stateDir: harness.stateDir });
    ca = readFileSync(web.caFile);
    const leaf = new X509Certificate(readFileSync(join(harness.stateDir, 'gateway-tls', 'console.crt')));
    const spki = createHash('sha256').update(leaf.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    browser = await Browser.launch(spki);
  });

  after(async () => {
    await browser?.close();
    await web?.close();
    await harness?.close();
    if (harness !== undefined) rmSync(harness.stateDir, { recursive: true, force: true });
  });

  it('refuses a visitor without a session, a foreign origin and a foreign host name', async () => {
    const root = await visit(web.url, ca);
    expect(root.status).to.equal(303);
    expect(root.headers['location']).to.equal('/login');
    for (const path of ['api/graph', 'api/decisions', 'api/certificate?workload=tagging']) {
      const r = await visit(`${web.url}${path}`, ca);
      expect(r.status, path).to.equal(401);
      expect(r.body, path).to.not.include('spiffe://');
    }
    const forged = await visit(`${web.url}api/graph`, ca, { headers: { cookie: `__Host-twokey-console=${'A'.repeat(43)}` } });
    expect(forged.status).to.equal(401);
    // A login posted from another site's page gets no session, even with the right password.
    const crossSite = await visit(`${web.url}login`, ca, {
      method: 'POST',
      headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: 'admin', password: harness.mesh.users['admin']! }).toString(),
    });
    expect(crossSite.status).to.equal(303);
    expect(crossSite.headers['location']).to.equal('/login?error=origin');
    expect(crossSite.headers['set-cookie']).to.equal(undefined);
    const rebound = await visit(web.url.replace('localhost', '127.0.0.1'), ca, { headers: { host: 'attacker.example:443' } });
    expect(rebound.status).to.equal(421);
    const login = await visit(`${web.url}login`, ca);
    expect(login.headers['content-security-policy']).to.match(/default-src 'self'; script-src 'self'; style-src 'self'.*frame-ancestors 'none'/);
    expect(login.headers['x-frame-options']).to.equal('DENY');
    expect(login.headers['access-control-allow-origin']).to.equal(undefined);

    // The browser sent to the console without a session lands on the login page.
    await browser!.goto(web.url);
    expect(await browser!.eval<string>('location.pathname')).to.equal('/login');
    // A user of the mesh who is no admin is refused like a wrong password.
    await submitLogin('alice', harness.mesh.users['alice']!);
    expect(await browser!.eval<string>("document.getElementById('login-error')?.textContent ?? ''")).to.include('Login failed');
    await browser!.screenshot(join(OUT, 'login-refused.png'));
  });

  async function submitLogin(username: string, password: string): Promise<void> {
    const loaded = browser!.goto(`${web.url}login`);
    await loaded;
    const navigated = new Promise<void>((resolve) => browser!.on((m) => m === 'Page.loadEventFired' && resolve()));
    await browser!.eval(
      `(() => { document.getElementById('username').value = ${JSON.stringify(username)}; document.getElementById('password').value = ${JSON.stringify(password)}; document.getElementById('login-form').requestSubmit(); return true; })()`,
    );
    await navigated;
  }

  it("logs the admin in and draws the six workloads, with tagging's edge to image-store", async () => {
    const violations: string[] = [];
    browser!.on((method, params) => {
      const text = JSON.stringify(params);
      if ((method === 'Log.entryAdded' || method === 'Runtime.consoleAPICalled' || method === 'Runtime.exceptionThrown') && /Content Security Policy|Uncaught/.test(text)) violations.push(text);
    });
    await submitLogin('admin', harness.mesh.users['admin']!);
    expect(await browser!.eval<string>('location.pathname + location.search')).to.equal('/');
    await browser!.waitFor("document.body.dataset.ready === 'true'");
    const { cookies } = (await browser!.send('Network.getCookies', { urls: [web.url] })) as { cookies: Array<{ name: string; httpOnly: boolean; secure: boolean; sameSite: string; value: string }> };
    const session = cookies.find((c) => c.name === '__Host-twokey-console');
    expect(session).to.include({ httpOnly: true, secure: true, sameSite: 'Strict' });
    expect(session!.value).to.match(/^[A-Za-z0-9_-]{43}$/);
    expect(await browser!.eval<boolean>("document.cookie.includes('twokey-console')"), 'cookie readable by script').to.equal(false);

    const nodes = await browser!.eval<string[]>("[...document.querySelectorAll('#graph .node')].map((n) => n.dataset.name).sort()");
    expect(nodes).to.deep.equal(['admin', 'auth', 'cleaner', 'gateway', 'image-store', 'tagging']);
    const methods = await browser!.eval<string[]>(
      "[...document.querySelectorAll('#graph .edge[data-from=\"tagging\"][data-to=\"image-store\"] tspan.method')].map((t) => t.textContent)",
    );
    expect(methods).to.deep.equal(['GetImage · images:read', 'WatchImages · images:watch', 'SetTags · images:tag']);
    expect(methods.join(' ')).to.not.include('DeleteImage');
    const page = await browser!.eval<string>('document.documentElement.outerHTML');
    for (const secret of Object.values(harness.mesh.users)) expect(page).to.not.include(secret);
    expect(page).to.not.match(/eyJ[A-Za-z0-9_-]{10,}\./);
    await browser!.screenshot(join(OUT, 'graph.png'));

    await browser!.eval("document.querySelector('#graph .node[data-name=\"tagging\"]').dispatchEvent(new MouseEvent('click', { bubbles: true }))");
    const serial = await browser!.waitFor<string>("document.querySelector('#certificate dd[data-field=\"serial\"]')?.textContent");
    const issued = new X509Certificate(readFileSync(join(harness.stateDir, 'svid', 'tagging', 'svid.pem')));
    // Compared as numbers: a random serial may start with a zero digit, which either spelling may drop.
    expect(serial.toLowerCase().replace(/^0+/, '')).to.equal(issued.serialNumber.toLowerCase().replace(/^0+/, ''));
    const certText = await browser!.eval<string>("document.getElementById('certificate').textContent");
    expect(certText).to.include('/twokey.images.v1.ImageStore/WatchImages');
    expect(certText).to.not.include('PRIVATE KEY');
    await browser!.screenshot(join(OUT, 'certificate.png'));
    expect(violations, violations.join('\n')).to.deep.equal([]);
  });

  it("shows bob's read of alice's image in the live list as a denial, with its reason and checks", async () => {
    await browser!.eval("document.getElementById('tab-decisions').click()");
    await browser!.waitFor("document.getElementById('stream-state').textContent === 'live'");
    const images = harness.gateway('image-store');
    const alice = await harness.login('alice');
    const bob = await harness.login('bob');
    const photo = await unary<{ id: string }>(images, 'CreateImage', { name: 'eiffel.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }), tags: [] }, withToken(alice));
    const started = Date.now();
    const details = await expectStatus(unary(images, 'GetImage', { id: photo.id, without_content: true }, withToken(bob)), 'PERMISSION_DENIED');
    const decisionId = /\(decision ([0-9a-f-]{36})\)/.exec(details)![1]!;
    const reason = await browser!.waitFor<string>(
      `document.querySelector('#decisions tr.deny[data-decision-id="${decisionId}"] td.reason')?.textContent`,
      15_000,
    );
    console.log(`      denial shown ${Date.now() - started} ms after bob's call returned`);
    expect(reason).to.match(/resource check failed/);
    const cells = await browser!.eval<string[]>(`[...document.querySelector('#decisions tr.deny[data-decision-id="${decisionId}"]').children].map((td) => td.textContent)`);
    expect(cells.slice(1, 6)).to.deep.equal(['deny', 'image-store', '/twokey.images.v1.ImageStore/GetImage', 'gateway', 'bob']);
    expect(cells[7]).to.equal('resource');
    await browser!.eval(`document.querySelector('#decisions tr.deny[data-decision-id="${decisionId}"]').click()`);
    const checks = await browser!.eval<string[][]>(
      `[...document.querySelectorAll('#decisions tr.checks .check-table tr[data-check]')].map((tr) => [...tr.children].map((td) => td.textContent))`,
    );
    expect(checks.map((c) => c.slice(0, 2))).to.deep.equal([['peer', 'pass'], ['rule', 'pass'], ['grant', 'pass'], ['token', 'pass'], ['revocation', 'pass'], ['binding', 'pass'], ['scope', 'pass'], ['resource', 'fail']]);
    expect(checks.find((c) => c[0] === 'resource')).to.deep.equal(['resource', 'fail', reason]);

    // The filters: outcome "allow" hides the denial (the same call's allowed checks 1-4 stay).
    await browser!.eval("(() => { const s = document.getElementById('filter-outcome'); s.value = 'allow'; s.dispatchEvent(new Event('input')); })()");
    expect(await browser!.eval<number>(`document.querySelectorAll('#decisions tr.deny[data-decision-id="${decisionId}"]').length`)).to.equal(0);
    expect(await browser!.eval<number>(`document.querySelectorAll('#decisions tr.allow[data-decision-id="${decisionId}"]').length`)).to.equal(1);
    await browser!.eval("(() => { const s = document.getElementById('filter-outcome'); s.value = 'deny'; s.dispatchEvent(new Event('input')); })()");
    expect(await browser!.eval<number>(`document.querySelectorAll('#decisions tr[data-decision-id="${decisionId}"]').length`)).to.equal(1);
    await browser!.eval(`document.querySelector('#decisions tr.deny[data-decision-id="${decisionId}"]').click()`);
    await browser!.screenshot(join(OUT, 'decisions.png'));

    // A denial by the interceptor carries every check's detail, as `twokey authz check` prints it.
    const tagging = await harness.workload('tagging', 'image-store');
    const grantDetails = await expectStatus(unary(tagging, 'DeleteImage', { id: photo.id }, withToken(alice)), 'PERMISSION_DENIED');
    const grantId = /\(decision ([0-9a-f-]{36})\)/.exec(grantDetails)![1]!;
    await browser!.waitFor(`document.querySelector('#decisions tr.deny[data-decision-id="${grantId}"]')`, 15_000);
    await browser!.eval(`document.querySelector('#decisions tr.deny[data-decision-id="${grantId}"]').click()`);
    const grantRow = await browser!.eval<string[]>(
      `[...document.querySelector('#decisions tr.deny[data-decision-id="${grantId}"]').nextElementSibling.querySelectorAll('tr[data-check="grant"] td')].map((td) => td.textContent)`,
    );
    expect(grantRow.slice(0, 2)).to.deep.equal(['grant', 'fail']);
    expect(grantRow[2]).to.include('does not grant /twokey.images.v1.ImageStore/DeleteImage');

    // The denial is counted on gateway's edge to image-store.
    await browser!.eval("document.getElementById('tab-graph').click()");
    const denied = await browser!.waitFor<string>("document.querySelector('#graph .edge[data-from=\"gateway\"][data-to=\"image-store\"] tspan.denied')?.textContent", 10_000);
    expect(Number(denied.slice(1))).to.be.greaterThan(0);
    await browser!.screenshot(join(OUT, 'graph-counts.png'));
  });

  it('logs out: the session ends on the server, not just in the browser', async () => {
    const { cookies } = (await browser!.send('Network.getCookies', { urls: [web.url] })) as { cookies: Array<{ name: string; value: string }> };
    const old = cookies.find((c) => c.name === '__Host-twokey-console')!.value;
    const before = await visit(`${web.url}api/graph`, ca, { headers: { cookie: `__Host-twokey-console=${old}` } });
    expect(before.status).to.equal(200);
    expect(JSON.parse(before.body).nodes).to.have.length(6);
    const navigated = new Promise<void>((resolve) => browser!.on((m) => m === 'Page.loadEventFired' && resolve()));
    await browser!.eval("document.querySelector('form.logout').requestSubmit()");
    await navigated;
    expect(await browser!.eval<string>('location.pathname')).to.equal('/login');
    const replayed = await visit(`${web.url}api/graph`, ca, { headers: { cookie: `__Host-twokey-console=${old}` } });
    expect(replayed.status).to.equal(401);
  });
});
