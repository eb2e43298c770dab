/** src/core/units.ts: the one size and duration syntax of every CLI option. */
import assert from 'node:assert/strict';
import { humanBytes, humanDuration, parseDuration, parseSize } from '../../src/core/units.js';
import { MedvError } from '../../src/core/errors.js';
import { runMedv, tempDir } from '../helpers/cli.js';
import { join } from 'node:path';

const refused = (f: () => unknown, re?: RegExp) => assert.throws(f, (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG' && (!re || re.test(e.message)));

describe('core/units', () => {
  it('parseSize: bytes, or K/M/G/T (powers of 1024) with an optional B or iB, any case', () => {
    const table: Array<[string, number]> = [
      ['4096', 4096], ['1', 1], ['64K', 65536], ['64k', 65536], ['64KB', 65536], ['64KiB', 65536], ['64kib', 65536],
      ['512M', 512 * 2 ** 20], ['512MiB', 512 * 2 ** 20], ['2G', 2 ** 31], ['64GB', 64 * 2 ** 30], ['1T', 2 ** 40], ['1tib', 2 ** 40], ['100B', 100],
    ];
    for (const [text, n] of table) assert.equal(parseSize(text, '--size'), n, text);
    for (const bad of ['', 'ten', '1.5G', '-1', '64 K', ' 64K', '64Ki', '64iB', '1P', '0x10', '64KK', '99999999999999999']) refused(() => parseSize(bad, '--size'), /--size/);
    refused(() => parseSize('0', '--size'), /out of range/);
    assert.equal(parseSize('0', 'x', { min: 0 }), 0);
    refused(() => parseSize('2M', '--chunk-size', { max: 2 ** 20 }), /--chunk-size 2M is out of range \(1 B to 1\.0 MiB\)/);
    assert.equal(humanBytes(2 ** 20), '1.0 MiB');
  });

  it('parseDuration: whole seconds, or s/m/h/d; milliseconds out; bounded', () => {
    const table: Array<[string, number]> = [['30', 30_000], ['90s', 90_000], ['30m', 1_800_000], ['12h', 43_200_000], ['7d', 604_800_000]];
    for (const [text, ms] of table) assert.equal(parseDuration(text, '--lifetime'), ms, text);
    for (const bad of ['', '1.5h', '10 m', '1w', '-5', 'h', '1H']) refused(() => parseDuration(bad, '--lifetime'), /--lifetime must be a duration/);
    refused(() => parseDuration('0', '--timeout'), /--timeout must be from 1s to 366d/);
    refused(() => parseDuration('2h', '--timeout', { max: 3600_000 }), /from 1s to 1h/);
    assert.equal(humanDuration(90_000), '90s');
  });

  it('every size option takes the same syntax through the CLI (disk create --size 8MiB; a typo is one line, exit 2)', () => {
    const dir = tempDir('units');
    try {
      const ok = runMedv(['disk', 'create', join(dir.path, 'a.vhd'), '--size', '8MiB', '--json']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.ok(JSON.parse(ok.stdout).virtualSize >= 8 * 2 ** 20);
      const bad = runMedv(['disk', 'create', join(dir.path, 'b.vhd'), '--size', '8 M']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /^medv: invalid size for --size: "8 M" \(use bytes, or a number with K, M, G or T: 4096, 64K, 512M, 64G\) \[EINVAL_ARG\]\n$/);
    } finally {
      void dir.cleanup();
    }
  });
});
