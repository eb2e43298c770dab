import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { MedvError } from '../../src/core/errors.js';
import { EVHD_HEADER_SIZE, EVHD_MAX_LOGICAL_LENGTH, evhdHeaderMacInput, looksLikeEvhd, newEvhdHeader, parseEvhdHeader, serializeEvhdHeader } from '../../src/formats/evhd.js';

const code = (c: string, offset?: number) => (e: unknown) =>
  e instanceof MedvError && e.code === c && (offset === undefined || e.data.offset === offset) && e.data.file === 'd.evhd';

function reseal(b: Buffer): Buffer {
  const z = Buffer.from(b);
  z.fill(0, 104, 136);
  createHash('sha256').update(z).digest().copy(b, 104);
  return b;
}

describe('formats: evhd header', () => {
  it('serializes and parses', () => {
    const h = newEvhdHeader(randomBytes(16), randomBytes(32), 123456789012n);
    const b = serializeEvhdHeader(h);
    assert.equal(b.length, EVHD_HEADER_SIZE);
    assert.ok(looksLikeEvhd(b));
    assert.deepEqual(parseEvhdHeader(b, 'd.evhd'), h);
    // Longer buffers are fine (only the first 4096 bytes are the header).
    assert.deepEqual(parseEvhdHeader(Buffer.concat([b, randomBytes(100)]), 'd.evhd'), h);
    // Every field that changes after creation (length, MAC, checksum) lives in the first sector.
    const mac = (input: Buffer) => createHash('sha256').update(input).digest();
    const h2 = serializeEvhdHeader({ ...h, logicalLength: 5n }, mac);
    assert.ok(b.subarray(512).equals(h2.subarray(512)));
  });

  it('the MAC field (136..168) is computed over the header with the checksum and MAC zeroed, then checksummed', () => {
    const h = newEvhdHeader(randomBytes(16), randomBytes(32), 4096n);
    let seen: Buffer | undefined;
    const tag = randomBytes(32);
    const b = serializeEvhdHeader(h, (input) => { seen = Buffer.from(input); return tag; });
    assert.ok(b.subarray(136, 168).equals(tag));
    assert.ok(seen && seen.length === EVHD_HEADER_SIZE);
    assert.ok(seen.subarray(104, 168).equals(Buffer.alloc(64)), 'checksum and MAC fields are zero in the MAC input');
    assert.ok(evhdHeaderMacInput(b).equals(seen), 'evhdHeaderMacInput gives the same bytes back from the sealed header');
    const parsed = parseEvhdHeader(b, 'd.evhd');
    assert.ok(parsed.mac.equals(tag));
    assert.equal(parsed.version, 2);
    // The checksum covers the MAC: flipping a MAC bit is a checksum error before any key is involved.
    const flip = Buffer.from(b); flip[140] ^= 1;
    assert.throws(() => parseEvhdHeader(flip, 'd.evhd'), code('ECHECKSUM', 104));
    assert.throws(() => serializeEvhdHeader(h, () => Buffer.alloc(31)), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
  });

  it('rejects hostile headers with typed errors naming the file and offset', () => {
    const good = serializeEvhdHeader(newEvhdHeader(randomBytes(16), randomBytes(32), 4096n));
    assert.throws(() => parseEvhdHeader(good.subarray(0, 4000), 'd.evhd'), code('ETRUNCATED', 4000));
    assert.throws(() => parseEvhdHeader(good.subarray(0, 3), 'd.evhd'), code('ETRUNCATED', 3));
    assert.throws(() => parseEvhdHeader(Buffer.alloc(0), 'd.evhd'), code('ETRUNCATED', 0));
    assert.throws(() => parseEvhdHeader(Buffer.alloc(4096), 'd.evhd'), code('EFORMAT', 0));
    const flip = Buffer.from(good); flip[3000] ^= 0x40;
    assert.throws(() => parseEvhdHeader(flip, 'd.evhd'), code('ECHECKSUM', 104));
    const mut = (off: number, f: (b: Buffer) => void) => { const b = Buffer.from(good); f(b); return reseal(b); };
    assert.throws(() => parseEvhdHeader(mut(8, (b) => b.writeUInt16LE(7, 8)), 'd.evhd'), code('EVERSION', 8));
    assert.throws(() => parseEvhdHeader(mut(8, (b) => b.writeUInt16LE(1, 8)), 'd.evhd'), code('EVERSION', 8)); // no MAC: refused
    assert.throws(() => parseEvhdHeader(mut(12, (b) => b.writeUInt32LE(512, 12)), 'd.evhd'), code('EFORMAT', 12));
    assert.throws(() => parseEvhdHeader(mut(16, (b) => b.writeUInt32LE(512, 16)), 'd.evhd'), code('EUNSUPPORTED', 16));
    assert.throws(() => parseEvhdHeader(mut(24, (b) => b.write('aes-128-xts', 24, 'latin1')), 'd.evhd'), code('EUNSUPPORTED', 24));
    assert.throws(() => parseEvhdHeader(mut(24, (b) => b.fill(0x41, 24, 40)), 'd.evhd'), code('EFORMAT', 24));
    assert.throws(() => parseEvhdHeader(mut(24, (b) => b.fill(0, 24, 40)), 'd.evhd'), code('EFORMAT', 24));
    assert.throws(() => parseEvhdHeader(mut(38, (b) => { b[38] = 1; }), 'd.evhd'), code('EFORMAT', 38));
    assert.throws(() => parseEvhdHeader(mut(24, (b) => { b[24] = 0x07; }), 'd.evhd'), code('EFORMAT', 24));
    assert.throws(() => parseEvhdHeader(mut(88, (b) => b.writeBigUInt64LE(2n ** 64n - 1n, 88)), 'd.evhd'), code('EFORMAT', 88));
    assert.throws(() => parseEvhdHeader(mut(88, (b) => b.writeBigUInt64LE(EVHD_MAX_LOGICAL_LENGTH + 1n, 88)), 'd.evhd'), code('EFORMAT', 88));
    assert.throws(() => parseEvhdHeader(mut(96, (b) => b.writeBigUInt64LE(0n, 96)), 'd.evhd'), code('EFORMAT', 96));
    assert.throws(() => parseEvhdHeader(42 as unknown as Buffer, 'd.evhd'), code('EINVAL_ARG'));
  });

  it('serialize refuses bad records', () => {
    const h = newEvhdHeader(randomBytes(16), randomBytes(32));
    const isArg = (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG';
    assert.throws(() => serializeEvhdHeader({ ...h, keyId: Buffer.alloc(15) }), isArg);
    assert.throws(() => serializeEvhdHeader({ ...h, keyCheck: Buffer.alloc(1) }), isArg);
    assert.throws(() => serializeEvhdHeader({ ...h, logicalLength: -1n }), isArg);
    assert.throws(() => serializeEvhdHeader({ ...h, cipher: 'x'.repeat(16) }), isArg);
  });
});
