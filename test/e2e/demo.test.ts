/** `medv demo --disks` (the disk-stack demo) end to end: in-process (runDemo) and through the CLI with --json. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { runDemo, type DemoResult } from '../../src/cli/demo.js';
import { runMedv } from '../helpers/cli.js';
import { accelerators } from '../helpers/qemu.js';

function checkResult(r: DemoResult): void {
  assert.equal(r.passed, true);
  assert.deepEqual(r.boots, [1, 2]);
  assert.equal(r.bootMs.length, 2);
  assert.equal(r.baseUnchanged, true);
  assert.deepEqual(r.plaintextFiles, []);
  assert.equal(r.markerReadsBack, true);
  assert.equal(r.undoCounter, 2);
  assert.equal(r.baseCounterAfterDiscard, 0);
  assert.deepEqual(r.steps.map((s) => s.step), [1, 2, 3, 4, 5, 6, 7]);
  assert.ok(r.seconds > 0);
  assert.ok(!existsSync(r.workDir), 'the work folder is removed without --keep');
}

describe('e2e: medv demo --disks', function () {
  this.timeout(180_000);

  it('runDemo passes under the last of accelerators() and logs numbered steps', async () => {
    const accel = accelerators().at(-1)!;
    const lines: string[] = [];
    const r = await runDemo({ accel, log: (l) => lines.push(l) });
    checkResult(r);
    assert.equal(r.accelRequested, accel);
    assert.equal(r.accel, accel);
    for (let n = 1; n <= 7; n++) assert.ok(lines.some((l) => l.startsWith(`${n}. `)), `step ${n} in:\n${lines.join('\n')}`);
    assert.match(lines.at(-1)!, /^demo passed in \d+\.\d s/);
  });

  it('medv demo --tcg --json prints only the result', () => {
    const out = runMedv(['demo', '--disks', '--tcg', '--json']);
    assert.equal(out.code, 0, out.stderr);
    const r = JSON.parse(out.stdout) as DemoResult;
    checkResult(r);
    assert.equal(r.accel, 'tcg');
  });
});
