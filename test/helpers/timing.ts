/**
 * A mocha root-hook plugin (`.mocharc.cjs` `require`): with MEDV_TEST_TIMES=FILE set, every
 * top-level `describe` appends one JSON line `{file, suite, ms, tests}` to FILE when it ends, its
 * hooks included (a guest booted in `before` counts). `node scripts/test-times.js FILE` sums them
 * per file and lists the slowest. Without the variable it does nothing. The same in serial and
 * --parallel runs: the hooks are added to each top-level suite, first and last.
 */
import { appendFileSync } from 'node:fs';
import { relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Context, Hook, Suite } from 'mocha';

function countTests(suite: Suite): number {
  return suite.tests.length + suite.suites.reduce((n, s) => n + countTests(s), 0);
}

/** mocha keeps a suite's `before` hooks in this (private) array: the start hook goes first. */
const beforeAllHooks = (s: Suite) => (s as unknown as { _beforeAll: Hook[] })._beforeAll;

export const mochaHooks = {
  beforeAll(this: Context) {
    const out = process.env.MEDV_TEST_TIMES;
    const root = this.test?.parent;
    if (!out || !root) return;
    for (const suite of root.suites) {
      let started = 0;
      suite.beforeAll('timing: start', () => { started = performance.now(); });
      beforeAllHooks(suite).unshift(beforeAllHooks(suite).pop()!);
      suite.afterAll('timing: end', () => {
        const line = { file: relative(process.cwd(), suite.file ?? '?'), suite: suite.title, ms: Math.round(performance.now() - started), tests: countTests(suite) };
        appendFileSync(out, `${JSON.stringify(line)}\n`);
      });
    }
  },
};
