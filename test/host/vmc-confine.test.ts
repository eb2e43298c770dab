/**
 * src/host/vmc.ts `confineTo`: a workspace version's `Test/<image>.vmc` may name `..\<image>.evhd`
 * (its version folder), and nothing above that folder (issue 22, part 1). Library calls: no VM runs.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { vmConfigFromVmc } from '../../src/host/vmc.js';
import { tempDir } from '../helpers/cli.js';
import { writeVmc } from '../helpers/vmc.js';

describe('host: a .vmc whose paths may reach a folder above its own (confineTo)', () => {
  const dir = tempDir('host-vmc-confine');
  after(() => dir.cleanup());

  it('Test/x.vmc reaches ..\\disk.img inside the version folder, is refused without confineTo, and never above it', () => {
    const version = join(dir.path, 'v1');
    mkdirSync(join(version, 'Test'), { recursive: true });
    writeFileSync(join(version, 'disk.img'), Buffer.alloc(1 << 20));
    writeFileSync(join(dir.path, 'outside.img'), Buffer.alloc(1 << 20));
    const test = join(version, 'Test', 'x.vmc');
    writeVmc(test, { drives: [{ path: '..\\disk.img' }] });
    const c = vmConfigFromVmc(test, { readOnly: true, confineTo: version });
    assert.deepEqual(c.disks, [{ path: join(version, 'disk.img'), confine: version, mode: 'test' }]);
    assert.throws(() => vmConfigFromVmc(test, { readOnly: true }), /leaves the folder of the \.vmc/);
    const climb = join(version, 'Test', 'climb.vmc');
    writeVmc(climb, { drives: [{ path: '..\\..\\outside.img' }] });
    assert.throws(() => vmConfigFromVmc(climb, { readOnly: true, confineTo: version }), (e: Error) => /outside\.img.*leads out of/.test(e.message) && (e as { code?: string }).code === 'ENOENT');
    assert.throws(() => vmConfigFromVmc(test, { confineTo: join(dir.path, 'elsewhere') }), /is not inside/);
  });
});
