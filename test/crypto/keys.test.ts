import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import {
  DataKey, createHostKey, encPathFor, hostKeyId, kekFromEnvironment, loadHostKey, readKeyFile, unwrapDataKey, wrapDataKey, writeKeyFile,
} from '../../src/crypto/index.js';
import { MedvError } from '../../src/core/errors.js';
import { KEYFILE_SIZE, parseKeyFile } from '../../src/formats/keyfile.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;
const CHEAP = { pwhash: { opslimit: 1, memlimit: 8192 } };
const sha = (p: string) => createHash('sha256').update(fs.readFileSync(p)).digest('hex');

describe('crypto: keys', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-keys-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('DataKey', () => {
    it('generates 64-byte secure keys with 16-byte ids, different each time, halves differ', () => {
      const a = DataKey.generate();
      const b = DataKey.generate();
      assert.equal(a.key.length, 64);
      assert.equal(a.keyId.length, 16);
      assert.equal((a.key as Buffer & { secure?: boolean }).secure, true);
      assert.ok(!a.key.equals(b.key));
      assert.ok(!a.keyId.equals(b.keyId));
      assert.ok(!a.key.subarray(0, 32).equals(a.key.subarray(32)));
      a.dispose(); b.dispose();
    });

    it('never shows key bytes in inspect or JSON, and frees (zeroes) them on dispose', () => {
      const k = DataKey.generate();
      const hex = k.key.toString('hex');
      const shown = inspect(k, { showHidden: true, depth: 5 }) + JSON.stringify(k);
      assert.ok(!shown.includes(hex.slice(0, 16)), shown);
      assert.ok(shown.includes(k.keyId.toString('hex')));
      const keyRef = k.key;
      k.dispose();
      k.dispose(); // idempotent
      assert.equal(keyRef.length, 0, 'freed: zeroed, unmapped and detached');
      assert.throws(() => k.key, code('ECLOSED'));
      assert.ok(k.disposed);
    });

    it('the key is sealed read-only (writes fault in a child process)', async () => {
      const { spawnSync } = await import('node:child_process');
      const mod = new URL('../../src/crypto/datakey.js', import.meta.url).href;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e',
        `import(${JSON.stringify(mod)}).then(m => { const k = m.DataKey.generate(); k.key[0] ^= 1; console.log('wrote'); })`]);
      assert.notEqual(r.status, 0, 'writing a sealed key must fault');
      assert.ok(!String(r.stdout).includes('wrote'));
    });
  });

  describe('kekFromEnvironment', () => {
    const saved = process.env.MEDV_PASSPHRASE;
    afterEach(() => { if (saved === undefined) delete process.env.MEDV_PASSPHRASE; else process.env.MEDV_PASSPHRASE = saved; });

    it('prefers --passphrase-file, then MEDV_PASSPHRASE, then the host key, else ENOKEY', () => {
      const pf = join(dir, 'pass');
      fs.writeFileSync(pf, 'from file\n', { mode: 0o600 });
      process.env.MEDV_PASSPHRASE = 'from env';
      assert.deepEqual(kekFromEnvironment({ passphraseFile: pf, hostKeyFile: '/x' }), { kind: 'passphrase', passphrase: 'from file' });
      assert.deepEqual(kekFromEnvironment({ hostKeyFile: '/x' }), { kind: 'passphrase', passphrase: 'from env' });
      delete process.env.MEDV_PASSPHRASE;
      assert.deepEqual(kekFromEnvironment({ hostKeyFile: '/x' }), { kind: 'hostkey', keyFile: '/x' });
      assert.throws(() => kekFromEnvironment(), (e: unknown) => code('ENOKEY')(e) && /MEDV_PASSPHRASE|--passphrase-file/.test((e as Error).message));
      process.env.MEDV_PASSPHRASE = '';
      assert.throws(() => kekFromEnvironment(), code('ENOKEY'));
    });

    it('strips one trailing newline (LF or CRLF); refuses empty or missing files', () => {
      const pf = join(dir, 'pass');
      fs.writeFileSync(pf, 'a b\r\n', { mode: 0o600 });
      assert.deepEqual(kekFromEnvironment({ passphraseFile: pf }), { kind: 'passphrase', passphrase: 'a b' });
      fs.writeFileSync(pf, 'x\n\n');
      assert.deepEqual(kekFromEnvironment({ passphraseFile: pf }), { kind: 'passphrase', passphrase: 'x\n' });
      fs.writeFileSync(pf, '\n');
      assert.throws(() => kekFromEnvironment({ passphraseFile: pf }), code('ENOKEY'));
      assert.throws(() => kekFromEnvironment({ passphraseFile: join(dir, 'missing') }), code('ENOENT'));
    });
  });

  describe('host keys', () => {
    it('createHostKey writes 32 random bytes with mode 0600 and refuses to overwrite', async () => {
      const hk = join(dir, 'host.key');
      const old = process.umask(0);
      try { await createHostKey(hk); } finally { process.umask(old); }
      const st = fs.statSync(hk);
      assert.equal(st.size, 32);
      assert.equal(st.mode & 0o777, 0o600);
      const before = fs.readFileSync(hk);
      await assert.rejects(createHostKey(hk), code('EEXIST'));
      assert.ok(fs.readFileSync(hk).equals(before));
      const k = await loadHostKey(hk);
      assert.ok(k.equals(before));
      assert.equal(hostKeyId(k).length, 16);
    });

    it('loadHostKey refuses files that are not 32 bytes', async () => {
      const hk = join(dir, 'bad.key');
      fs.writeFileSync(hk, Buffer.alloc(31));
      await assert.rejects(loadHostKey(hk), code('EFORMAT'));
      await assert.rejects(loadHostKey(join(dir, 'none')), code('ENOENT'));
    });
  });

  describe('.enc key files', () => {
    it('round-trips a data key under a passphrase (Argon2id INTERACTIVE by default, recorded in the file)', async () => {
      const k = DataKey.generate();
      const enc = join(dir, 'disk.enc');
      await writeKeyFile(enc, k, { kind: 'passphrase', passphrase: 'correct horse' });
      const bytes = fs.readFileSync(enc);
      assert.equal(bytes.length, KEYFILE_SIZE);
      assert.equal(fs.statSync(enc).mode & 0o777, 0o600);
      const rec = parseKeyFile(bytes);
      assert.equal(rec.kek.kind, 'passphrase');
      if (rec.kek.kind === 'passphrase') {
        assert.equal(rec.kek.opslimit, 2n);
        assert.equal(rec.kek.memlimit, 64n * 1024n * 1024n);
      }
      const back = await readKeyFile(enc, { kind: 'passphrase', passphrase: 'correct horse' });
      assert.ok(back.key.equals(k.key));
      assert.ok(back.keyId.equals(k.keyId));
      assert.ok(!bytes.includes(k.key.subarray(0, 16)), 'key in clear');
      assert.deepEqual(fs.readdirSync(dir), ['disk.enc'], 'no temporary file left');
    });

    it('a wrong passphrase gives EBADKEY and changes nothing', async () => {
      const k = DataKey.generate();
      const enc = join(dir, 'disk.enc');
      await writeKeyFile(enc, k, { kind: 'passphrase', passphrase: 'right' }, CHEAP);
      const before = sha(enc);
      await assert.rejects(readKeyFile(enc, { kind: 'passphrase', passphrase: 'wrong' }),
        (e: unknown) => code('EBADKEY')(e) && /wrong passphrase or key/.test((e as Error).message) && (e as MedvError).data.file === enc);
      assert.equal(sha(enc), before);
    });

    it('round-trips under a host key; another host key gives EBADKEY; a KEK of the wrong kind gives ENOKEY', async () => {
      const hk = join(dir, 'host.key');
      const hk2 = join(dir, 'other.key');
      await createHostKey(hk);
      await createHostKey(hk2);
      const k = DataKey.generate();
      const enc = join(dir, 'disk.enc');
      await writeKeyFile(enc, k, { kind: 'hostkey', keyFile: hk });
      const back = await readKeyFile(enc, { kind: 'hostkey', keyFile: hk });
      assert.ok(back.key.equals(k.key));
      await assert.rejects(readKeyFile(enc, { kind: 'hostkey', keyFile: hk2 }), code('EBADKEY'));
      await assert.rejects(readKeyFile(enc, { kind: 'passphrase', passphrase: 'x' }), code('ENOKEY'));
      const enc2 = join(dir, 'p.enc');
      await writeKeyFile(enc2, k, { kind: 'passphrase', passphrase: 'x' }, CHEAP);
      await assert.rejects(readKeyFile(enc2, { kind: 'hostkey', keyFile: hk }), code('ENOKEY'));
    });

    it('writeKeyFile refuses to overwrite; readKeyFile refuses oversized, short and missing files', async () => {
      const k = DataKey.generate();
      const enc = join(dir, 'disk.enc');
      fs.writeFileSync(enc, 'precious');
      await assert.rejects(writeKeyFile(enc, k, { kind: 'passphrase', passphrase: 'x' }, CHEAP), code('EEXIST'));
      assert.equal(fs.readFileSync(enc, 'utf8'), 'precious');
      fs.writeFileSync(enc, Buffer.alloc(10 * 1024 * 1024));
      await assert.rejects(readKeyFile(enc, { kind: 'passphrase', passphrase: 'x' }), code('EFORMAT'));
      fs.writeFileSync(enc, Buffer.from('MEDVKEY\0'));
      await assert.rejects(readKeyFile(enc, { kind: 'passphrase', passphrase: 'x' }), code('ETRUNCATED'));
      await assert.rejects(readKeyFile(join(dir, 'none.enc'), { kind: 'passphrase', passphrase: 'x' }), code('ENOENT'));
    });

    it('refuses absurd Argon2id parameters before running Argon2 (hostile file)', async () => {
      const k = DataKey.generate();
      await assert.rejects(wrapDataKey(k, { kind: 'passphrase', passphrase: 'x' }, { pwhash: { opslimit: 1, memlimit: 2 ** 40 } }), code('EFORMAT'));
      const good = await wrapDataKey(k, { kind: 'passphrase', passphrase: 'x' }, CHEAP);
      // Forge memlimit = 2^40 with a valid checksum: refused at parse time (EFORMAT; Argon2id run
      // with it would fail with ECRYPTO for want of memory). How fast: bench/limits.
      const forged = Buffer.from(good);
      forged.writeBigUInt64LE(2n ** 40n, 56);
      const { createHash: h } = await import('node:crypto');
      h('sha256').update(forged.subarray(0, 184)).digest().copy(forged, 184);
      await assert.rejects(unwrapDataKey(forged, { kind: 'passphrase', passphrase: 'x' }), code('EFORMAT'));
    });

    it('encPathFor: foo.evhd -> foo.enc, anything else gets .enc appended', () => {
      assert.equal(encPathFor('/a/b/foo.evhd'), '/a/b/foo.enc');
      assert.equal(encPathFor('/a/b/foo.EVHD'), '/a/b/foo.enc');
      assert.equal(encPathFor('/a/b.evhd/foo'), '/a/b.evhd/foo.enc');
      assert.equal(encPathFor('x.vhd.evhd'), 'x.vhd.enc');
    });
  });
});
