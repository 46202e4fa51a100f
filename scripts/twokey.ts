#!/usr/bin/env node
// The `twokey` command: checks the runtime, then hands over to the CLI.
import { requireSupportedNode } from './node-version.ts';

requireSupportedNode('twokey');
const { main } = await import('./cli.ts');
process.exitCode = await main(process.argv.slice(2));
