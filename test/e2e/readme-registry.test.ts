// The README explains the registry with the real file: its copy must be exactly deploy/registry.yaml.
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { REPO_ROOT } from '../../scripts/local-mesh/supervisor.ts';

describe('README registry excerpt', () => {
  it('is the registry the mesh runs with, verbatim', () => {
    const readme = readFileSync(`${REPO_ROOT}README.md`, 'utf8');
    const registry = readFileSync(`${REPO_ROOT}deploy/registry.yaml`, 'utf8');
    const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
    expect(blocks, 'a yaml block in README.md that equals deploy/registry.yaml').to.include(registry);
  });
});
