// `npm start`: checks the runtime, then starts the example mesh (scripts/start-mesh.ts).
import { requireSupportedNode } from './node-version.ts';

requireSupportedNode('npm start');
const { startMesh } = await import('./start-mesh.ts');
process.exitCode = await startMesh(process.argv.slice(2));
