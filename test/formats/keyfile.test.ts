import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { MedvError } from '../../src/core/errors.js';
import { KEYFILE_SIZE, type KeyFileRecord, parseKeyFile, serializeKeyFile, serializeKeyFileAad } from '../../src/formats/keyfile.js';

const code = (c: string, offset?: number) => (e: unknown) =>
  e instanceof MedvError && e.code === c && (offset === undefined || e.data.offset === offset) && e.data.file === 'k.enc';

function rec(kind: 'passphrase' | 'hostkey'): KeyFileRecord {
  return {
    version: 1,
    keyId: randomBytes(16),
    kek: kind === 'passphrase' ? { kind, salt: randomBytes(16), opslimit: 2n, memlimit: 67108864n } : { kind, hostKeyId: randomBytes(16) },
    nonce: randomBytes(24),
    wrappedKey: randomBytes(80),
  };
}

function reseal(b: Buffer): Buffer {
  createHash('sha256').update(b.subarray(0, 184)).digest().copy(b, 184);
  return b;
}

describe('formats: keyfile (.enc)', () => {
  it('serializes and parses both KEK kinds', () => {
    for (const kind of ['passphrase', 'hostkey'] as const) {
      const r = rec(kind);
      const b = serializeKeyFile(r);
      assert.equal(b.length, KEYFILE_SIZE);
      assert.equal(b.subarray(0, 8).toString('latin1'), 'MEDVKEY\0');
      const p = parseKeyFile(b, 'k.enc');
      assert.deepEqual({ ...p, aad: undefined }, { ...r, aad: undefined });
      assert.ok(p.aad.equals(b.subarray(0, 104)));
      assert.ok(serializeKeyFileAad(r).equals(p.aad));
    }
  });

  it('rejects hostile input with typed errors naming the file and offset', () => {
    const good = serializeKeyFile(rec('passphrase'));
    assert.throws(() => parseKeyFile(good.subarray(0, 100), 'k.enc'), code('ETRUNCATED', 100));
    assert.throws(() => parseKeyFile(good.subarray(0, 4), 'k.enc'), code('ETRUNCATED', 4));
    assert.throws(() => parseKeyFile(Buffer.concat([good, Buffer.alloc(1)]), 'k.enc'), code('EFORMAT', 216));
    assert.throws(() => parseKeyFile(Buffer.from('hello world'), 'k.enc'), code('EFORMAT', 0));
    const flip = Buffer.from(good); flip[130] ^= 1;
    assert.throws(() => parseKeyFile(flip, 'k.enc'), code('ECHECKSUM', 184));
    const v2 = Buffer.from(good); v2.writeUInt16LE(2, 8);
    assert.throws(() => parseKeyFile(reseal(v2), 'k.enc'), code('EVERSION', 8));
    const kind = Buffer.from(good); kind[10] = 9;
    assert.throws(() => parseKeyFile(reseal(kind), 'k.enc'), code('EUNSUPPORTED', 10));
    const wl = Buffer.from(good); wl.writeUInt32LE(1 << 30, 12);
    assert.throws(() => parseKeyFile(reseal(wl), 'k.enc'), code('EFORMAT', 12));
    for (const [off, v] of [[48, 0n], [48, 17n], [48, 2n ** 63n], [56, 0n], [56, 8191n], [56, 2n ** 31n], [56, 2n ** 64n - 1n]] as const) {
      const b = Buffer.from(good); b.writeBigUInt64LE(v, off);
      assert.throws(() => parseKeyFile(reseal(b), 'k.enc'), code('EFORMAT', off), `${off}=${v}`);
    }
    const hk = serializeKeyFile(rec('hostkey'));
    const salted = Buffer.from(hk); salted[40] = 1;
    assert.throws(() => parseKeyFile(reseal(salted), 'k.enc'), code('EFORMAT', 32));
    const mixed = Buffer.from(good); mixed[70] = 1;
    assert.throws(() => parseKeyFile(reseal(mixed), 'k.enc'), code('EFORMAT', 64));
    assert.throws(() => parseKeyFile('x' as unknown as Buffer, 'k.enc'), code('EINVAL_ARG'));
  });

  it('serialize refuses bad records with EINVAL_ARG or EFORMAT', () => {
    const r = rec('passphrase');
    assert.throws(() => serializeKeyFile({ ...r, keyId: Buffer.alloc(3) }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
    assert.throws(() => serializeKeyFile({ ...r, wrappedKey: Buffer.alloc(64) }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
    assert.throws(() => serializeKeyFile({ ...r, kek: { kind: 'passphrase', salt: randomBytes(16), opslimit: 99n, memlimit: 8192n } }),
      (e: unknown) => e instanceof MedvError && e.code === 'EFORMAT');
  });
});
