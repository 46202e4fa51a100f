// Preloaded with `--import` through NODE_OPTIONS (where `--cpu-prof` is not allowed) into the
// example mesh's services when the benchmark profiles scenario E: samples this process's main
// thread from start to exit and writes $TWOKEY_BENCH_PROFILE_DIR/CPU.<pid>.cpuprofile.
import fs from 'node:fs';
import inspector from 'node:inspector';
import path from 'node:path';

const dir = process.env.TWOKEY_BENCH_PROFILE_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.start');
  // An in-thread inspector session answers synchronously, so this completes inside 'exit'.
  process.on('exit', () => {
    session.post('Profiler.stop', (err, result) => {
      if (err) return;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `CPU.${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
