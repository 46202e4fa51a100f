// What RenewableChannel adds to each call, measured apart from the network: createCall + start through it vs a stub channel directly (npx tsx bench/renewable-channel.ts).
import * as grpc from '@grpc/grpc-js';
import { RenewableChannel } from '../services/authz/renewable-channel.ts';
const md = new grpc.Metadata();
const okStatus = { code: 0, details: '', metadata: md };
const stubCall = () => ({ start(_m: unknown, l: { onReceiveStatus(s: unknown): void }) { l.onReceiveStatus(okStatus); } });
const stub = { createCall: () => stubCall(), close() {}, getTarget: () => 't', getConnectivityState: () => 0, watchConnectivityState() {}, getChannelzRef: () => ({}) } as unknown as grpc.ChannelInterface;
const version = {};
const renewable = new RenewableChannel(() => stub, { version: () => version });
const listener = { onReceiveMetadata() {}, onReceiveMessage() {}, onReceiveStatus() {} };
function loop(ch: grpc.ChannelInterface, n: number): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) ch.createCall('/a/b', Infinity, null, null, null).start(md, listener);
  return Number(process.hrtime.bigint() - t0) / n;
}
const a: number[] = [], b: number[] = [];
loop(renewable, 200_000); loop(stub, 200_000);
for (let r = 0; r < 9; r++) { a.push(loop(renewable, 1_000_000)); b.push(loop(stub, 1_000_000)); }
const med = (x: number[]) => [...x].sort((p, q) => p - q)[4]!;
console.log(`through RenewableChannel: ${med(a).toFixed(0)} ns/call; stub channel directly: ${med(b).toFixed(0)} ns/call; added ${(med(a) - med(b)).toFixed(0)} ns`);
