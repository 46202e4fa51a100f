// The README's Notes service on a test mesh built from the installed package, with certificate
// files and tokens for a client in another language; prints one JSON line, runs until stdin ends.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestServer } from 'twokey/testing';
import { notesService } from './notes.js';

const out = process.argv[2];
const server = await startTestServer({ protoRoots: ['proto'], services: { 'acme.notes.v1.Notes': notesService } });
const files = (name, grants) => {
  const issued = server.mesh.issue(name, grants);
  const dir = join(out, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'svid.pem'), issued.chainPem);
  writeFileSync(join(dir, 'svid.key'), issued.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, 'bundle.pem'), issued.bundlePem);
  return { chain: join(dir, 'svid.pem'), key: join(dir, 'svid.key'), bundle: join(dir, 'bundle.pem') };
};
const alice = await server.userToken('alice', ['notes:read']);
const bob = await server.userToken('bob', ['notes:read']);
process.stdout.write(`${JSON.stringify({
  address: server.address,
  web: files('py-web', ['/acme.notes.v1.Notes/GetNote']),
  cleaner: files('py-cleaner', ['/acme.notes.v1.Notes/DeleteNote']),
  tokens: { alice, bob, forged: `${alice.split('.').slice(0, 2).join('.')}.${bob.split('.')[2]}` },
})}\n`);
process.stdin.resume();
process.stdin.on('end', () => server.close().then(() => process.exit(0)));
