/**
 * Moving the clock of a command the way a user setting the system clock would: libfaketime
 * (Debian's `faketime` package, installed by scripts/setup.sh) preloaded into the process, so medv
 * has no clock hook of its own. Monotonic clocks are left alone (timers and QEMU keep working).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';

function library(): string {
  for (const dir of fs.readdirSync('/usr/lib').map((d) => join('/usr/lib', d, 'faketime'))) {
    const lib = join(dir, 'libfaketime.so.1');
    if (fs.existsSync(lib)) return lib;
  }
  throw new Error('libfaketime is not installed (apt-get install faketime; scripts/setup.sh installs it)');
}

/**
 * Environment for a child whose wall clock reads `spec`: `+1d`, `-2h` (relative to now) or
 * `@2020-01-01 00:00:00` (an absolute start that then runs on).
 */
export function fakeClock(spec: string): Record<string, string> {
  return { LD_PRELOAD: library(), FAKETIME: spec, FAKETIME_DONT_FAKE_MONOTONIC: '1', FAKETIME_NO_CACHE: '1' };
}
