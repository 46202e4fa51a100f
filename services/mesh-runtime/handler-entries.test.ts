// Handler entries: counted once per call that reaches a handler, before the handler's own code, by method and caller.
import { expect } from 'chai';
import type { ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { Registry } from 'prom-client';
import { HANDLER_ENTRIES_METRIC, HandlerEntries } from './handler-entries.ts';

const SERVICE = {
  Get: { path: '/pkg.S/Get' },
  Put: { path: '/pkg.S/Put' },
} as unknown as ServiceDefinition;

async function samples(registry: Registry): Promise<string[]> {
  return (await registry.metrics()).split('\n').filter((l) => l.startsWith(HANDLER_ENTRIES_METRIC));
}

describe('HandlerEntries', () => {
  it("counts each entry before the handler's own code (a handler that throws is still counted), passes the arguments on, and leaves other methods at nothing", async () => {
    const registry = new Registry();
    const entries = new HandlerEntries(registry, ['spiffe://td/ns/a/sa/b']);
    const seen: number[] = [];
    const impl: UntypedServiceImplementation = {
      Get(this: unknown, a: unknown, b: unknown) {
        seen.push((a as number) + (b as number));
        throw new Error('handler failed after its entry was counted');
      },
      Put: () => undefined,
    };
    const wrapped = entries.wrap(SERVICE, impl);
    for (let i = 0; i < 3; i++) expect(() => (wrapped['Get'] as unknown as (a: number, b: number) => void)(1, 2)).to.throw('handler failed');
    expect(seen).to.deep.equal([3, 3, 3]);
    // Outside a call there is no peer: the caller label is "none".
    expect(await samples(registry)).to.deep.equal([`${HANDLER_ENTRIES_METRIC}{method="/pkg.S/Get",caller="none"} 3`]);
  });
});
