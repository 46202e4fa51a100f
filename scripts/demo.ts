// `npm run demo`: walks through the picture-sharing scenario against the mesh `npm start` runs,
// printing each call with ALLOW or DENY and the reason the mesh gave.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { unary } from '../services/mesh-runtime/protos.ts';
import { jpegWithGps, jpegWithoutExif } from './fixtures/gps-jpeg.ts';
import { gatewayClient, readEndpoints, workloadClient } from './local-mesh/clients.ts';

let surprises = 0;
let stateDir = '.twokey';
let requestId = '';

/** Metadata for the current step: the token, if any, and the step's request id (which every decision line records). */
function as(token?: string): Metadata {
  const md = new Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  md.set('x-request-id', requestId);
  return md;
}

/** The log files of a service's processes: `<service>.log`, and `<service>-2.log` and on when it runs replicated. */
function processLogs(service: string): { process: string; path: string }[] {
  const dir = join(stateDir, 'logs');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f === `${service}.log` || new RegExp(`^${service}-\\d+\\.log$`).test(f))
    .sort()
    .map((f) => ({ process: f.slice(0, -'.log'.length), path: join(dir, f) }));
}

/** Log lines of one service (every process of it) that match `filter`. */
function logLines(service: string, filter: (line: Record<string, unknown>) => boolean): Record<string, unknown>[] {
  return processLogs(service).flatMap(({ path }) =>
    readFileSync(path, 'utf8')
      .split('\n')
      .filter((raw) => raw.startsWith('{'))
      .map((raw) => JSON.parse(raw) as Record<string, unknown>)
      .filter(filter),
  ).sort((a, b) => String(a['time']).localeCompare(String(b['time'])));
}

/** The decision lines the services wrote for the current step, in time order, each named by the process that wrote it. */
function trail(): string[] {
  const lines: { time: string; text: string }[] = [];
  for (const { process: service, path } of ['gateway', 'auth', 'image-store', 'tagging'].flatMap(processLogs)) {
    for (const raw of readFileSync(path, 'utf8').split('\n')) {
      if (!raw.includes(requestId)) continue;
      const line = JSON.parse(raw) as Record<string, unknown>;
      if (line['request_id'] !== requestId) continue;
      if (line['event'] === 'authz.decision') {
        const who = `${String(line['peer_spiffe_id']).replace(/^spiffe:\/\/[^/]+\/ns\/[^/]+\/sa\//, '')}${line['subject'] ? ` for ${line['subject']}` : ''}`;
        lines.push({ time: String(line['time']), text: `[${service}] ${line['allow'] ? 'allow' : 'deny'} ${line['method']} (${who}): ${line['reason']}` });
      } else if (line['event'] === 'authz.resource_denied' || line['event'] === 'call.refused') {
        const who = `${String(line['peer_spiffe_id']).replace(/^spiffe:\/\/[^/]+\/ns\/[^/]+\/sa\//, '')}${line['subject'] ? ` for ${line['subject']}` : ''}`;
        lines.push({ time: String(line['time']), text: `[${service}] deny ${line['method']} (${who}) in the handler: ${line['reason']}` });
      } else if (line['event'] === 'gateway.deny') {
        lines.push({ time: String(line['time']), text: `[gateway] deny ${line['method']}: ${line['reason']}` });
      }
    }
  }
  return lines.sort((a, b) => a.time.localeCompare(b.time)).map((l) => l.text);
}

interface Image {
  id: string;
  owner: string;
  tags: string[];
}

/** Runs one call, prints its outcome, and notes it when the outcome is not the expected one. */
async function step<T>(title: string, expected: 'allow' | keyof typeof status, call: () => Promise<T>): Promise<T | undefined> {
  process.stdout.write(`\n• ${title}\n`);
  requestId = randomUUID();
  try {
    const result = await call();
    process.stdout.write(`  ALLOW\n`);
    for (const line of trail()) process.stdout.write(`    ${line}\n`);
    if (expected !== 'allow') {
      surprises++;
      process.stdout.write(`  !! expected ${expected}\n`);
    }
    return result;
  } catch (err) {
    const e = err as ServiceError;
    // grpc-js's status is a numeric enum: indexing it by code gives the name.
    const name = (status[e.code] as string | undefined) ?? String(e.code);
    process.stdout.write(`  DENY ${name}: ${e.details}\n`);
    for (const line of trail()) process.stdout.write(`    ${line}\n`);
    if (expected !== name) {
      surprises++;
      process.stdout.write(`  !! expected ${expected}\n`);
    }
    return undefined;
  }
}

function note(text: string): void {
  process.stdout.write(`  ${text}\n`);
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    requestId = randomUUID();
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 500));
  }
  note(`(gave up waiting for ${what} after ${timeoutMs / 1000} s)`);
  surprises++;
  return undefined;
}

async function main(): Promise<number> {
  stateDir = process.env['TWOKEY_STATE_DIR'] ?? '.twokey';
  if (!existsSync(join(stateDir, 'endpoints.json'))) {
    process.stderr.write(`twokey demo: no running mesh found in ${stateDir}; start one with 'npm start' first\n`);
    return 1;
  }
  const endpoints = readEndpoints(stateDir);
  const passwords = JSON.parse(readFileSync(join(stateDir, 'users.json'), 'utf8')) as Record<string, string>;
  const auth = gatewayClient(endpoints, 'auth');
  const images = gatewayClient(endpoints, 'image-store');
  const tagging = gatewayClient(endpoints, 'tagging');
  const closers: (() => void)[] = [() => auth.close(), () => images.close(), () => tagging.close()];
  try {
    process.stdout.write(`twokey demo against the gateway at ${endpoints.gateway.address}\n`);

    const login = async (user: string): Promise<string> =>
      (await unary<{ access_token: string }>(auth, 'Login', { username: user, password: passwords[user] }, as())).access_token;
    const alice = await step('alice logs in through the gateway', 'allow', () => login('alice'));
    const bob = await step('bob logs in through the gateway', 'allow', () => login('bob'));
    if (alice === undefined || bob === undefined) return 1;
    await step('mallory guesses a password', 'UNAUTHENTICATED', () => unary(auth, 'Login', { username: 'alice', password: 'not-the-password' }, as()));

    await step('someone calls ListImages on the gateway without a token', 'UNAUTHENTICATED', () =>
      unary(images, 'ListImages', { owner: '', tag: '', page_size: 0, page_token: '' }, as()),
    );

    const photo = await step('alice uploads a photo taken at the Eiffel Tower (GPS in its EXIF)', 'allow', () =>
      unary<Image>(images, 'CreateImage', { name: 'eiffel.jpg', content_type: 'image/jpeg', content: jpegWithGps({ latitude: 48.8584, longitude: 2.2945 }), tags: ['paris'], request_id: randomUUID() }, as(alice)),
    );
    if (photo === undefined) return 1;
    note(`image ${photo.id}, owner ${photo.owner}`);

    process.stdout.write(`\n• the tagging worker notices the upload (WatchImages, its service token), reads the photo and\n  writes location tags with a token alice's delegation allows (ExchangeToken, then SetTags)\n`);
    const tagged = await waitFor('the location tags', 20_000, async () => {
      const img = await unary<Image>(images, 'GetImage', { id: photo.id, without_content: true }, as(alice));
      return img.tags.includes('gps') ? img : undefined;
    });
    if (tagged !== undefined) {
      note(`ALLOW — tags now: ${tagged.tags.join(', ')}`);
      for (const line of logLines('auth', (l) => l['event'] === 'auth.exchange').slice(-1)) {
        note(`  [auth] delegated token for ${line['actor']}: scope ${line['scope']}, audience ${line['audience']}`);
      }
      for (const line of logLines('image-store', (l) => l['method'] === '/twokey.images.v1.ImageStore/SetTags' && l['token_kind'] === 'delegated').slice(-1)) {
        note(`  [image-store] ${line['allow'] ? 'allow' : 'deny'} SetTags (tagging for ${line['subject']}, actor chain ${JSON.stringify(line['actor_chain'])}): ${line['reason']}`);
      }
    }

    const suggestion = await step('alice asks for tag suggestions (gateway -> tagging -> image-store, her token forwarded)', 'allow', () =>
      unary<{ tags: string[]; latitude: number; longitude: number }>(tagging, 'SuggestTags', { image_id: photo.id }, as(alice)),
    );
    if (suggestion !== undefined) note(`suggested: ${suggestion.tags.join(', ')}`);

    await step("bob tries to read alice's photo", 'PERMISSION_DENIED', () => unary(images, 'GetImage', { id: photo.id, without_content: true }, as(bob)));
    await step('bob tries an image id that does not exist: the same answer, so ids leak nothing', 'PERMISSION_DENIED', () =>
      unary(images, 'GetImage', { id: `img_${'0'.repeat(32)}`, without_content: true }, as(bob)),
    );
    await step("bob tries to delete alice's photo", 'PERMISSION_DENIED', () => unary(images, 'DeleteImage', { id: photo.id }, as(bob)));

    // From here the demo plays workloads, using their certificates from the state directory.
    const asTagging = await workloadClient(endpoints, 'tagging', 'image-store');
    closers.push(asTagging.close);
    await step("tagging's certificate with alice's own token tries to delete her photo", 'PERMISSION_DENIED', () =>
      unary(asTagging.client, 'DeleteImage', { id: photo.id }, as(alice)),
    );
    await step("tagging's certificate with alice's token tries to rename her photo", 'PERMISSION_DENIED', () =>
      unary(asTagging.client, 'UpdateImage', { id: photo.id, name: 'mine-now.jpg', content_type: '', content: Buffer.alloc(0) }, as(alice)),
    );

    const taggingAuth = await workloadClient(endpoints, 'tagging', 'auth');
    closers.push(taggingAuth.close);
    const delegated = await step("tagging obtains a delegated token for alice (images:tag, audience image-store)", 'allow', () =>
      unary<{ access_token: string; scope: string }>(taggingAuth.client, 'ExchangeToken', {
        subject_token: '', subject_user: 'alice', scope: 'images:tag', audience: endpoints.services['image-store']!.spiffeId,
      }, as()),
    );
    await step('tagging asks for more than the registry lets it hold for a user (images:delete)', 'PERMISSION_DENIED', () =>
      unary(taggingAuth.client, 'ExchangeToken', { subject_token: '', subject_user: 'alice', scope: 'images:delete', audience: endpoints.services['image-store']!.spiffeId }, as()),
    );
    if (delegated !== undefined) {
      await step('tagging uses that token to set tags on the photo', 'allow', () =>
        unary(asTagging.client, 'SetTags', { id: photo.id, tags: [...(tagged?.tags ?? []), 'demo'] }, as(delegated.access_token)),
      );
      const asGateway = await workloadClient(endpoints, 'gateway', 'image-store');
      closers.push(asGateway.close);
      await step("the gateway's certificate replays tagging's delegated token (stolen token)", 'UNAUTHENTICATED', () =>
        unary(asGateway.client, 'SetTags', { id: photo.id, tags: ['stolen'] }, as(delegated.access_token)),
      );
    }

    const asCleaner = await workloadClient(endpoints, 'cleaner', 'image-store');
    closers.push(asCleaner.close);
    await step("the cleaner's certificate tries UpdateImage, which it is not granted", 'PERMISSION_DENIED', () =>
      unary(asCleaner.client, 'UpdateImage', { id: photo.id, name: 'x.jpg', content_type: '', content: Buffer.alloc(0) }, as(alice)),
    );

    const flagged = await step('alice uploads a second photo that moderation has flagged', 'allow', () =>
      unary<Image>(images, 'CreateImage', { name: 'flagged.jpg', content_type: 'image/jpeg', content: jpegWithoutExif(), tags: ['flagged'], request_id: randomUUID() }, as(alice)),
    );
    if (flagged !== undefined) {
      process.stdout.write(`\n• the cleaner's periodic job (its own service token, images:delete:any) deletes flagged images\n`);
      const gone = await waitFor('the cleaner', 30_000, async () => {
        const list = await unary<{ images: Image[] }>(images, 'ListImages', { owner: '', tag: '', page_size: 0, page_token: '' }, as(alice));
        return list.images.some((i) => i.id === flagged.id) ? undefined : list;
      });
      if (gone !== undefined) {
        note(`ALLOW — flagged image ${flagged.id} deleted; alice still has: ${gone.images.map((i) => i.id).join(', ')}`);
        for (const line of logLines('image-store', (l) => l['event'] === 'images.deleted' && l['image_id'] === flagged.id)) {
          note(`  [image-store] deleted by ${line['by']} with its ${line['token_kind']} token`);
        }
      }
    }

    process.stdout.write(
      `\nEvery call above wrote one decision line (peer SPIFFE ID, subject, checks, reason) to ${stateDir}/logs/<service>.log.\n` +
        (surprises === 0 ? 'All outcomes were as expected.\n' : `${surprises} outcome(s) differed from what the scenario expects.\n`),
    );
    return surprises === 0 ? 0 : 1;
  } finally {
    for (const close of closers) close();
  }
}

process.exitCode = await main();
