import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encPathFor, type KekSource, createHostKey } from '../../../src/crypto/index.js';
import { MedvError } from '../../../src/core/errors.js';
import { createEvhdFile, decryptFile, encryptFile, openEvhdFile } from '../../../src/layers/evhd/index.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;
const sha = (p: string) => createHash('sha256').update(fs.readFileSync(p)).digest('hex');
const PASS: KekSource = { kind: 'passphrase', passphrase: 'evhd acceptance passphrase' };

describe('layers: evhd files (acceptance)', function () {
  this.timeout(60000);
  let dir: string;
  before(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-evhdf-')); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('decryptFile(encryptFile(x.vhd)) is byte-identical for qemu-made dynamic and fixed VHDs', async () => {
    for (const sub of ['dynamic', 'fixed']) {
      const vhd = join(dir, `x-${sub}.vhd`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', `subformat=${sub}`, vhd, '16M']);
      execFileSync('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x55 0 1M', '-c', 'write -P 0xaa 5M 64k', '-c', 'write -P 0x11 15M 4k', vhd], { stdio: 'ignore' });
      const evhd = join(dir, `x-${sub}.evhd`);
      const progress: Array<[number, number]> = [];
      await encryptFile(vhd, evhd, PASS, (d, t) => progress.push([d, t]));
      assert.ok(fs.existsSync(encPathFor(evhd)));
      assert.deepEqual(progress.at(-1), [fs.statSync(vhd).size, fs.statSync(vhd).size]);
      const out = join(dir, `x-${sub}.out.vhd`);
      await decryptFile(evhd, out, PASS);
      assert.equal(sha(out), sha(vhd), sub);
      assert.equal(fs.statSync(out).mode & 0o777, 0o600);
      // qemu reads the decrypted disk and sees the data written through qemu-io.
      execFileSync('qemu-io', ['-f', 'vpc', '-r', '-c', 'read -P 0x55 0 1M', '-c', 'read -P 0xaa 5M 64k', out], { stdio: 'ignore' });
      // The device view equals the file.
      const dev = await openEvhdFile(evhd, PASS, { readOnly: true });
      try {
        assert.equal(dev.size, fs.statSync(vhd).size);
        assert.ok((await dev.read(0, dev.size)).equals(fs.readFileSync(vhd)));
      } finally {
        await dev.close();
      }
    }
  });

  it('round-trips files whose length is not a multiple of 4096 (and empty ones)', async () => {
    const hk = join(dir, 'odd.key');
    await createHostKey(hk);
    const kek: KekSource = { kind: 'hostkey', keyFile: hk };
    for (const len of [0, 1, 511, 4095, 4097, 3 * 4096 + 123, 4 * 1024 * 1024 + 5000]) {
      const src = join(dir, `odd-${len}.bin`);
      fs.writeFileSync(src, randomBytes(len));
      const evhd = join(dir, `odd-${len}.evhd`);
      await encryptFile(src, evhd, kek);
      assert.equal(fs.statSync(evhd).size, 4096 + Math.ceil(len / 4096) * 4096);
      const out = join(dir, `odd-${len}.out`);
      await decryptFile(evhd, out, kek);
      assert.equal(sha(out), sha(src), `length ${len}`);
    }
  });

  it('a 32-byte plaintext pattern written many times appears nowhere in the .evhd or the .enc', async () => {
    const pattern = Buffer.from('MEDV-KNOWN-PLAINTEXT-PATTERN-32B');
    assert.equal(pattern.length, 32);
    const raw = join(dir, 'pattern.raw');
    const body = Buffer.alloc(2 * 1024 * 1024);
    for (let i = 0; i < body.length; i += 32) pattern.copy(body, i);
    fs.writeFileSync(raw, body);
    const vhd = join(dir, 'pattern.vhd');
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vpc', raw, vhd]);
    const evhd = join(dir, 'pattern.evhd');
    await encryptFile(vhd, evhd, PASS);
    // Also write it through the device at unaligned offsets.
    const dev = await openEvhdFile(evhd, PASS);
    for (let i = 0; i < 50; i++) await dev.write(1000 + i * 4099, Buffer.concat([pattern, pattern, pattern]));
    await dev.close();
    const vhdBytes = fs.readFileSync(vhd);
    assert.ok(vhdBytes.includes(pattern), 'the pattern is in the plaintext VHD');
    for (const f of [evhd, encPathFor(evhd)]) {
      const bytes = fs.readFileSync(f);
      for (let rot = 0; rot < 32; rot++) {
        const run = Buffer.concat([pattern.subarray(rot), pattern.subarray(0, rot)]);
        assert.equal(bytes.indexOf(run), -1, `${f} contains a 32-byte run of the pattern (rotation ${rot})`);
      }
    }
  });

  it('a wrong passphrase gives EBADKEY and leaves .evhd and .enc unchanged; nothing is created', async () => {
    const src = join(dir, 'w.bin');
    fs.writeFileSync(src, randomBytes(100000));
    const evhd = join(dir, 'w.evhd');
    await encryptFile(src, evhd, PASS);
    const before = [sha(evhd), sha(encPathFor(evhd))];
    const wrong: KekSource = { kind: 'passphrase', passphrase: 'not it' };
    await assert.rejects(openEvhdFile(evhd, wrong), code('EBADKEY'));
    await assert.rejects(openEvhdFile(evhd, wrong, { readOnly: true }), code('EBADKEY'));
    const out = join(dir, 'w.out');
    await assert.rejects(decryptFile(evhd, out, wrong), code('EBADKEY'));
    assert.ok(!fs.existsSync(out));
    assert.deepEqual([sha(evhd), sha(encPathFor(evhd))], before);
  });

  it('an .enc from another disk (wrong key id) gives EBADKEY', async () => {
    const a = join(dir, 'a.evhd');
    const b = join(dir, 'b.evhd');
    await (await createEvhdFile(a, PASS)).close();
    const db = await createEvhdFile(b, PASS);
    await db.write(0, randomBytes(10000));
    await db.close();
    const before = sha(b);
    fs.copyFileSync(encPathFor(a), encPathFor(b));
    await assert.rejects(openEvhdFile(b, PASS), (e: unknown) => code('EBADKEY')(e) && /key id/.test((e as Error).message));
    assert.equal(sha(b), before);
  });

  it('works with a host key as the KEK', async () => {
    const hk = join(dir, 'host.key');
    await createHostKey(hk);
    const kek: KekSource = { kind: 'hostkey', keyFile: hk };
    const p = join(dir, 'h.evhd');
    const dev = await createEvhdFile(p, kek);
    const data = randomBytes(12345);
    await dev.write(0, data);
    await dev.close();
    const again = await openEvhdFile(p, kek);
    assert.ok((await again.read(0, 12345)).equals(data));
    await again.close();
    await assert.rejects(openEvhdFile(p, PASS), code('ENOKEY'));
  });

  it('refuses to overwrite an .evhd, its .enc, or a decrypt destination', async () => {
    const p = join(dir, 'exists.evhd');
    fs.writeFileSync(p, 'keep');
    await assert.rejects(createEvhdFile(p, PASS), code('EEXIST'));
    assert.equal(fs.readFileSync(p, 'utf8'), 'keep');
    assert.ok(!fs.existsSync(encPathFor(p)));
    const q = join(dir, 'encexists.evhd');
    fs.writeFileSync(encPathFor(q), 'keep');
    await assert.rejects(createEvhdFile(q, PASS), code('EEXIST'));
    assert.ok(!fs.existsSync(q));
    const src = join(dir, 'src.bin');
    fs.writeFileSync(src, 'abc');
    await assert.rejects(encryptFile(src, p, PASS), code('EEXIST'));
    const e = join(dir, 'ok.evhd');
    await encryptFile(src, e, PASS);
    await assert.rejects(decryptFile(e, src, PASS), code('EEXIST'));
    assert.equal(fs.readFileSync(src, 'utf8'), 'abc');
    await assert.rejects(encryptFile(join(dir, 'missing'), join(dir, 'm.evhd'), PASS), code('ENOENT'));
    await assert.rejects(openEvhdFile(join(dir, 'missing.evhd'), PASS), code('ENOENT'));
  });

  it('a file with the .enc but no usable .evhd gives a typed error (EFORMAT / ETRUNCATED)', async () => {
    const p = join(dir, 'broken.evhd');
    await (await createEvhdFile(p, PASS)).close();
    fs.writeFileSync(p, 'not an evhd at all, just some bytes');
    await assert.rejects(openEvhdFile(p, PASS), code('EFORMAT'));
    fs.writeFileSync(p, Buffer.alloc(0));
    await assert.rejects(openEvhdFile(p, PASS), code('ETRUNCATED'));
  });
});
