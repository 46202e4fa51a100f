// Refuses, with one clear line, a Node.js older than the runtime twokey is built and tested on.
// It imports nothing, so an entry point can run it before loading modules (node:sqlite) that
// an older Node cannot even resolve.

export const MINIMUM_NODE_MAJOR = 24;

/** Exits with status 1 and a message naming both versions when this Node is too old. */
export function requireSupportedNode(program: string): void {
  const major = Number(process.versions.node.split('.')[0]);
  if (major >= MINIMUM_NODE_MAJOR) return;
  process.stderr.write(
    `${program}: needs Node.js ${MINIMUM_NODE_MAJOR} LTS or later; this is Node.js ${process.versions.node} (${process.execPath}).\n` +
      `Install Node.js ${MINIMUM_NODE_MAJOR} and run it again.\n`,
  );
  process.exit(1);
}
