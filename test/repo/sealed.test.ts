import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientHostKey, openClientRoot, readSealed, writeSealed } from '../../src/repo/index.js';
import { MedvError } from '../../src/core/errors.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;

describe('repo: sealed files', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-repo-sealed-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const value = { user: 'alice', secret: 'the-plaintext-marker-1234567890', n: [1, 2, 3] };

  it('round trips, 0600, creates the host key 0600, and the file does not hold the plaintext', async () => {
    const c = openClientRoot(join(dir, 'root'));
    const file = join(c.config, 'Offline.dat');
    await writeSealed(c, file, 'offline', value);
    assert.deepEqual(await readSealed(c, file, 'offline'), value);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const kek = await clientHostKey(c);
    assert.equal(kek.kind, 'hostkey');
    assert.equal(fs.statSync(join(c.local, 'host.key')).mode & 0o777, 0o600);
    const raw = fs.readFileSync(file);
    assert.equal(raw.indexOf('the-plaintext-marker'), -1);
    assert.equal(raw.indexOf('alice'), -1);
    assert.equal(raw.indexOf(JSON.stringify(value)), -1);
    // relative names are inside the root; no temporaries left behind
    await writeSealed(c, 'data/Local/Config/other.dat', 'x', 1);
    assert.equal(await readSealed(c, join(c.config, 'other.dat'), 'x'), 1);
    assert.deepEqual(fs.readdirSync(c.config).sort(), ['Offline.dat', 'other.dat']);
  });

  it('missing file: undefined; outside the root: refused', async () => {
    const c = openClientRoot(join(dir, 'root'));
    assert.equal(await readSealed(c, join(c.config, 'none.dat'), 'x'), undefined);
    await assert.rejects(writeSealed(c, join(dir, 'outside.dat'), 'x', 1), code('EINVAL_ARG'));
    await assert.rejects(writeSealed(c, '../escape.dat', 'x', 1), code('EINVAL_ARG'));
    assert.equal(fs.existsSync(join(dir, 'outside.dat')), false);
  });

  it('a tampered byte, a truncated file, the wrong purpose, another host key: ECORRUPT naming the file', async () => {
    const c = openClientRoot(join(dir, 'root'));
    const file = join(c.config, 'Offline.dat');
    await writeSealed(c, file, 'offline', value);
    const good = fs.readFileSync(file);
    await assert.rejects(readSealed(c, file, 'reports'), (e: unknown) => code('ECORRUPT')(e) && (e as Error).message.includes(file));

    const bad = Buffer.from(good); bad[bad.length - 20] ^= 1;
    fs.writeFileSync(file, bad);
    await assert.rejects(readSealed(c, file, 'offline'), (e: unknown) => code('ECORRUPT')(e) && (e as Error).message.includes(file));

    fs.writeFileSync(file, good.subarray(0, good.length - 1));
    await assert.rejects(readSealed(c, file, 'offline'), code('ECORRUPT'));
    fs.writeFileSync(file, good.subarray(0, 20));
    await assert.rejects(readSealed(c, file, 'offline'), code('ECORRUPT'));

    // the same file under another client's host key
    const other = openClientRoot(join(dir, 'other'));
    await clientHostKey(other);
    fs.writeFileSync(join(other.config, 'Offline.dat'), good);
    await assert.rejects(readSealed(other, join(other.config, 'Offline.dat'), 'offline'), code('ECORRUPT'));
    fs.writeFileSync(file, good);
    assert.deepEqual(await readSealed(c, file, 'offline'), value);
  });

  it('refuses a symlink in place of the file and a value over 1 MiB', async () => {
    const c = openClientRoot(join(dir, 'root'));
    fs.writeFileSync(join(dir, 'target'), 'x');
    fs.symlinkSync(join(dir, 'target'), join(c.config, 'link.dat'));
    await assert.rejects(readSealed(c, join(c.config, 'link.dat'), 'x'), code('EUNSAFE'));
    await assert.rejects(writeSealed(c, join(c.config, 'big.dat'), 'x', 'y'.repeat(1024 * 1024 + 1)), code('ETOOLARGE'));
  });
});
