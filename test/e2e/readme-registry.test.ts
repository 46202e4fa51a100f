// The example system's page explains the registry with the real file: its copy must be exactly deploy/registry.yaml.
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { REPO_ROOT } from '../../scripts/local-mesh/supervisor.ts';

describe('docs registry excerpt', () => {
  it('is the registry the mesh runs with, verbatim', () => {
    const page = readFileSync(`${REPO_ROOT}docs/example-system.md`, 'utf8');
    const registry = readFileSync(`${REPO_ROOT}deploy/registry.yaml`, 'utf8');
    const blocks = [...page.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
    expect(blocks, 'a yaml block in docs/example-system.md that equals deploy/registry.yaml').to.include(registry);
  });
});
