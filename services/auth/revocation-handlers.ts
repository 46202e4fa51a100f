// auth's revocation RPCs: the signed set for mesh servers (unary and streamed), and the admin methods.
import type * as grpc from '@grpc/grpc-js';
import { callContext } from '../authz/call-context.ts';
import { TwokeyError } from '../authz/errors.ts';
import { unaryHandler } from '../mesh-runtime/handlers.ts';
import type { Logger } from '../mesh-runtime/logger.ts';
import type { RevocationPublisher } from './revocation-publisher.ts';
import type { SigningKeys } from './signing-keys.ts';
import { isUsername } from './username.ts';

/** Who asked, for the audit line: the admin workload and the subject of its token (both verified). */
function requester(): { workload: string | undefined; subject: string | undefined } {
  const ctx = callContext();
  return { workload: ctx.peer?.spiffeId.toString(), subject: ctx.token?.subject };
}

/** Marks a user disabled in auth's user table (logins and exchanges refused); throws for an unknown user. */
export type DisableInUserTable = (username: string) => Promise<unknown> | unknown;

export function revocationHandlers(
  log: Logger,
  revocations: RevocationPublisher,
  keys: SigningKeys,
  disableInUserTable: DisableInUserTable,
): grpc.UntypedServiceImplementation {
  const audit = (what: string, fields: Record<string, unknown>, seq: number): { seq: string } => {
    log.warn({ event: 'revocation.added', what, ...fields, seq, by: requester() }, `revocation recorded: ${what}`);
    return { seq: String(seq) };
  };
  return {
    GetRevocations: unaryHandler(log, async () => ({ set_jws: (await revocations.latest()).jws })),
    WatchRevocations: (call: grpc.ServerWritableStream<unknown, { set_jws: string }>) => {
      // Every push (change or heartbeat) goes out; a watcher that cannot keep up is cut off and reconnects.
      const unsubscribe = revocations.subscribe((jws) => {
        if (call.writableLength > 4 * 1024 * 1024) call.destroy(new Error('watcher too slow'));
        else call.write({ set_jws: jws });
      });
      call.on('cancelled', unsubscribe);
      call.on('close', unsubscribe);
      call.on('error', unsubscribe);
      void revocations.latest().then(
        ({ jws }) => call.write({ set_jws: jws }),
        () => call.destroy(new Error('no revocation set')),
      );
    },
    DisableUser: unaryHandler(log, async (req: { username: string }) => {
      if (!isUsername(req.username)) throw new TwokeyError('ERR_REQUEST_INVALID', 'username is not a username');
      // Refuses logins and exchanges from now on (auth's user table), and already issued tokens (the set).
      await disableInUserTable(req.username);
      const set = await revocations.disableSubject(req.username);
      return audit('user disabled', { user: req.username }, set.seq);
    }),
    RevokeToken: unaryHandler(log, async (req: { jti: string; exp: string }) => {
      const set = await revocations.revokeJti(req.jti, Number(req.exp));
      return audit('token revoked', { jti: req.jti }, set.seq);
    }),
    RevokeCertificate: unaryHandler(log, async (req: { serial_hex: string; not_after: string }) => {
      const set = await revocations.revokeSerial(req.serial_hex, Number(req.not_after));
      return audit('certificate revoked', { serial: req.serial_hex }, set.seq);
    }),
    WithdrawKey: unaryHandler(log, async (req: { kid: string }) => {
      await revocations.withdrawKid(req.kid);
      // Never sign again with a withdrawn key: rotate until it is neither current nor next.
      for (let i = 0; i < 2 && (await keys.jwks()).keys.slice(0, 2).some((k) => k.kid === req.kid); i += 1) await keys.rotate(`kid ${req.kid} withdrawn`);
      const set = (await revocations.publish()).set;
      return audit('signing key withdrawn', { kid: req.kid }, set.seq);
    }),
    ListRevocations: unaryHandler(log, async () => {
      const { set } = await revocations.latest();
      const entries = await revocations.list();
      return {
        seq: String(set.seq),
        entries: entries.map((e) => ({ kind: e.kind, value: e.value, at: String(e.atSeconds), keep_until: String(e.keepUntilSeconds) })),
      };
    }),
  };
}
