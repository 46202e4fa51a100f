// `twokey authz nginx-config`: the configuration nginx 1.22 accepts (nginx -t), and the fail-closed rules it must keep.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { CertificateAuthority } from '../../certs-ca/index.ts';
import { IDENTITY_HEADER_NAMES } from '../../services/authorizer/backend-headers.ts';
import { renderNginxConfig, type NginxConfigOptions } from '../../services/authorizer/nginx-config.ts';
import { AUTHORIZER_PROTO_ROOT, CHECK_METHOD } from '../../services/authorizer/proxy-admission.ts';
import { REPO_ROOT, TWOKEY_BIN } from '../../scripts/local-mesh/supervisor.ts';
import { requireSystem } from '../support/requires.ts';
import { NOTES_ID, TD, nginxMissing, nginxTest } from './front-harness.ts';

/** The directives of one block: `server { ... }` at depth 1 of http, or a named location, without nested blocks. */
function blockLines(config: string, header: RegExp): string[] {
  const lines = config.split('\n');
  const start = lines.findIndex((l) => header.test(l.trim()));
  expect(start, `a block ${header}`).to.be.greaterThan(-1);
  const out: string[] = [];
  let depth = 0;
  for (const line of lines.slice(start)) {
    const t = line.replace(/#.*$/, '').trim();
    if (t.endsWith('{')) {
      depth += 1;
      continue;
    }
    if (t === '}') {
      depth -= 1;
      if (depth === 0) break;
      continue;
    }
    if (depth === 1 && t !== '') out.push(t);
  }
  return out;
}

describe('twokey authz nginx-config', () => {
  let root: string;
  let options: NginxConfigOptions;

  before(function () {
    requireSystem(this, 'nginx', nginxMissing());
    root = mkdtempSync(join(tmpdir(), 'twokey-nginx-config-'));
    const ca = CertificateAuthority.init({ dir: join(root, 'ca'), trustDomain: TD });
    ca.writeWorkload(join(root, 'svid'), ca.issue({ spiffeId: NOTES_ID, grants: [CHECK_METHOD], ttl: '1h', extraProtoRoots: [AUTHORIZER_PROTO_ROOT] }));
    options = {
      service: NOTES_ID,
      listen: '127.0.0.1:18443',
      backend: 'grpc://127.0.0.1:50051',
      svidDir: join(root, 'svid'),
      authorizer: 'https://authorizer.twokey.svc:8182',
      runtimeDir: join(root, 'run'),
    };
    mkdirSync(join(root, 'run'));
  });

  after(() => root !== undefined && rmSync(root, { recursive: true, force: true }));

  it('writes a whole nginx.conf that nginx 1.22 accepts (nginx -t), from the command line', () => {
    const out = join(root, 'run', 'nginx.conf');
    const r = spawnSync(
      process.execPath,
      [TWOKEY_BIN, 'authz', 'nginx-config', '--service', NOTES_ID, '--listen', '127.0.0.1:18443', '--backend', 'grpc://127.0.0.1:50051', '--svid-dir', options.svidDir, '--authorizer', 'https://127.0.0.1:8182', '--authorizer-name', 'localhost', '--runtime-dir', join(root, 'run'), '--out', out],
      { cwd: REPO_ROOT, encoding: 'utf8' },
    );
    expect(r.status, r.stderr).to.equal(0);
    const tested = nginxTest(out, join(root, 'run'));
    expect(tested.status, tested.output).to.equal(0);
    expect(tested.output).to.match(/syntax is ok/);
  });

  it('writes an http-level part that nginx -t accepts inside an http block', () => {
    const snippet = renderNginxConfig({ ...options, runtimeDir: undefined, authorizer: 'unix:/run/twokey/authz.sock', backend: 'grpcs://localhost:50051' });
    // nginx resolves upstream names when it loads the file, so the test names only local ones.
    const conf = join(root, 'run', 'include.conf');
    writeFileSync(join(root, 'run', 'twokey.conf'), snippet);
    writeFileSync(conf, `pid ${join(root, 'run', 'p.pid')};\nevents {}\nhttp {\n  client_body_temp_path ${join(root, 'run', 'cb')};\n  include ${join(root, 'run', 'twokey.conf')};\n}\n`);
    const tested = nginxTest(conf, join(root, 'run'));
    expect(tested.status, tested.output).to.equal(0);
    expect(snippet).to.include('grpc_ssl_verify on;');
  });

  it('maps only the certificate codes at server level: a 5xx there would make the authorizer fail open', () => {
    const server = blockLines(renderNginxConfig(options), /^server \{$/);
    const errorPages = server.filter((l) => l.startsWith('error_page'));
    expect(errorPages).to.deep.equal(['error_page 495 496 = @twokey_bad_certificate;']);
    expect(server).to.include.members(['listen 127.0.0.1:18443 ssl http2;', 'ssl_verify_client on;', 'ssl_protocols TLSv1.3;', 'client_max_body_size 8388608;']);
  });

  it('maps 401, 403, 500 and the backend 5xx only in the proxied location, and sets every identity header there', () => {
    const location = blockLines(renderNginxConfig(options), /^location \/ \{$/);
    expect(location.filter((l) => l.startsWith('error_page'))).to.deep.equal([
      'error_page 401 = @twokey_unauthenticated;',
      'error_page 403 = @twokey_permission_denied;',
      'error_page 500 = @twokey_authorizer_unavailable;',
      'error_page 502 503 504 = @twokey_backend_unavailable;',
    ]);
    for (const header of IDENTITY_HEADER_NAMES) {
      const variable = `$${header.replace(/^x-/, '').replace(/-/g, '_')}`;
      expect(location).to.include(`auth_request_set ${variable} $upstream_http_${header.replace(/-/g, '_')};`);
      expect(location).to.include(`grpc_set_header ${header} ${variable};`);
    }
    // The subrequest's own headers, and the reason, are cleared on the way to the backend.
    for (const header of ['x-client-cert', 'x-client-verify', 'x-original-uri', 'x-twokey-reason']) expect(location).to.include(`grpc_set_header ${header} "";`);
  });

  it('asks the authorizer over mTLS with the proxy identity, keep-alive, and short timeouts; no error_page in that location', () => {
    const config = renderNginxConfig(options);
    const authz = blockLines(config, /^location = \/_twokey_authz \{$/);
    expect(authz.filter((l) => l.startsWith('error_page'))).to.deep.equal([]);
    expect(authz).to.include.members([
      'internal;',
      'proxy_pass https://twokey_authorizer/check;',
      'proxy_http_version 1.1;',
      'proxy_set_header Connection "";',
      'proxy_pass_request_body off;',
      'proxy_set_header X-Original-Uri $request_uri;',
      'proxy_set_header X-Client-Cert $ssl_client_escaped_cert;',
      'proxy_set_header X-Client-Verify $ssl_client_verify;',
      'proxy_ssl_verify on;',
      'proxy_ssl_name authorizer.twokey.svc;',
      'proxy_ssl_protocols TLSv1.3;',
      'proxy_read_timeout 1000ms;',
    ]);
    expect(blockLines(config, /^upstream twokey_authorizer \{$/)).to.include('keepalive 16;');
    for (const name of ['twokey_unauthenticated', 'twokey_permission_denied']) {
      expect(blockLines(config, new RegExp(`^location @${name} \\{$`))).to.include.members(['default_type application/grpc;', 'return 204;']);
    }
  });

  it('refuses a plaintext authorizer that is not on loopback', () => {
    expect(() => renderNginxConfig({ ...options, authorizer: 'http://10.0.0.5:8182' })).to.throw(/plaintext only to loopback/);
  });
});
