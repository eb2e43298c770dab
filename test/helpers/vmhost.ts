/**
 * The fixture of the VM host's CLI tests: a fresh temporary folder and run root per test (its VMs
 * are stopped and the folder removed after it), and `medv vm …` bound to that run root.
 *
 *   describe('…', function () {
 *     const host = vmHost('host-x');
 *     it('…', async () => { host.json(['start', img, '--name', 'a']); … });
 *   });
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runMedv, tempDir, type RunResult } from './cli.js';

export interface VmHost {
  /** This test's folder. */
  readonly path: string;
  /** The environment every command of this test runs with (MEDV_RUN_DIR and what `extraEnv` adds); tests may change it. */
  env: Record<string, string>;
  /** `medv vm ARGS` with this test's environment. */
  vm(args: string[], opts?: { timeoutMs?: number }): RunResult;
  /** `medv vm ARGS --json`, which must succeed; its output parsed. */
  json(args: string[], extraEnv?: Record<string, string | undefined>): any;
  /** Where the supervisor of VM `name` keeps the guest's COM1 output. */
  serialOf(name: string): string;
}

/** Register the fixture's hooks in the calling `describe` and return the live context. */
export function vmHost(prefix: string, extraEnv: () => Record<string, string> = () => ({})): VmHost {
  let dir: ReturnType<typeof tempDir> | undefined;
  const host: VmHost = {
    get path() { return dir!.path; },
    env: {},
    vm: (args, opts) => runMedv(['vm', ...args], host.env, opts),
    json: (args, more = {}) => {
      const r = runMedv(['vm', ...args, '--json'], { ...host.env, ...more });
      assert.equal(r.code, 0, `medv vm ${args.join(' ')}: ${r.stderr}`);
      return JSON.parse(r.stdout);
    },
    serialOf: (name) => join(host.env.MEDV_RUN_DIR, name, 'serial.log'),
  };
  beforeEach(() => {
    dir = tempDir(prefix);
    host.env = { MEDV_RUN_DIR: join(dir.path, 'run'), ...extraEnv() };
  });
  afterEach(async () => {
    for (const s of JSON.parse(runMedv(['vm', 'list', '--json'], host.env).stdout || '[]')) {
      if (s.state !== 'stopped' && s.state !== 'failed') runMedv(['vm', 'stop', s.name, '--force'], host.env);
    }
    await dir?.cleanup();
  });
  return host;
}
