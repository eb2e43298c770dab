/**
 * Fuzz: mutated EVHD headers and .enc key files (seeded, reproducible) must give either a valid
 * result or a MedvError, never another exception, a hang, or a huge allocation.
 * Mutations: bit flips, byte overwrites, forged fields with a recomputed checksum (so parsing
 * gets past the checksum), truncation and extension. A header that opens with the key must be
 * byte-identical to the real one: the header MAC refuses every forged field (EAUTH).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryDevice } from '../../src/block/memory.js';
import { DataKey, type KekSource, createHostKey, unwrapDataKey, wrapDataKey } from '../../src/crypto/index.js';
import { MedvError } from '../../src/core/errors.js';
import { EVHD_HEADER_SIZE, parseEvhdHeader } from '../../src/formats/evhd.js';
import { createEvhd, openEvhd } from '../../src/layers/evhd/index.js';
import { prng } from '../conformance/blockdevice.js';

type Rng = () => number;
const int = (r: Rng, n: number) => Math.floor(r() * n);

const INTERESTING = [0n, 1n, 2n, 7n, 8n, 16n, 17n, 4095n, 4096n, 4097n, 8191n, 0x7fffffffn, 0x80000000n, 0xffffffffn,
  2n ** 53n, 2n ** 53n - 1n, 2n ** 63n, 2n ** 64n - 1n];

/** Field map (offset, width) for forging; the checksum is recomputed by `reseal`. */
type Field = [offset: number, width: 1 | 2 | 4 | 8 | 16];

function forge(r: Rng, buf: Buffer, fields: Field[]): void {
  const [off, width] = fields[int(r, fields.length)];
  if (off + width > buf.length) return;
  if (width === 16) { randomFill(r, buf, off, 16); return; }
  let v = r() < 0.7 ? INTERESTING[int(r, INTERESTING.length)] : BigInt(int(r, 2 ** 32)) * BigInt(int(r, 2 ** 32));
  v &= (1n << BigInt(8 * width)) - 1n;
  for (let i = 0; i < width; i++) buf[off + i] = Number((v >> BigInt(8 * i)) & 0xffn);
}

function randomFill(r: Rng, buf: Buffer, off: number, len: number): void {
  for (let i = 0; i < len && off + i < buf.length; i++) buf[off + i] = int(r, 256);
}

function mutate(r: Rng, base: Buffer, fields: Field[], reseal: (b: Buffer) => void): Buffer {
  let b = Buffer.from(base);
  const kind = int(r, 6);
  switch (kind) {
    case 0: { const n = 1 + int(r, 8); for (let i = 0; i < n; i++) { const p = int(r, b.length); b[p] ^= 1 << int(r, 8); } break; }
    case 1: randomFill(r, b, int(r, b.length), 1 + int(r, 16)); break;
    case 2: case 3: { const n = 1 + int(r, 3); for (let i = 0; i < n; i++) forge(r, b, fields); reseal(b); break; }
    case 4: b = b.subarray(0, int(r, b.length)); if (r() < 0.5) reseal(b); break;
    default: b = Buffer.concat([b, Buffer.alloc(1 + int(r, 64), int(r, 256))]); break;
  }
  return b;
}

const isTyped = (e: unknown) => e instanceof MedvError && typeof e.code === 'string';

describe('fuzz: evhd headers and .enc key files', function () {
  this.timeout(60000);
  let dir: string;
  before(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-fuzz-')); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const evhdFields: Field[] = [[8, 2], [10, 2], [12, 4], [16, 4], [20, 4], [24, 16], [40, 16], [56, 16], [72, 16], [88, 8], [96, 8], [136, 16], [152, 16], [200, 8]];
  const resealEvhd = (b: Buffer) => {
    if (b.length < 136) return;
    const z = Buffer.from(b.subarray(0, Math.min(b.length, EVHD_HEADER_SIZE)));
    z.fill(0, 104, 136);
    createHash('sha256').update(z).digest().copy(b, 104);
  };

  // How long a hostile header takes to refuse: bench/limits (no timing here).
  it('6,000 mutated EVHD headers parse or fail with MedvError; 1,500 open and read over memory', async () => {
    const key = DataKey.generate();
    const mem = new MemoryDevice(0);
    const dev = await createEvhd(mem, key.clone());
    await dev.write(0, randomBytes(3 * 4096 + 100));
    await dev.close();
    const image = mem.snapshot();
    const header = image.subarray(0, EVHD_HEADER_SIZE);
    const r = prng(0xe7d);
    let ok = 0, failed = 0, forgedRefused = 0;
    for (let i = 0; i < 6000; i++) {
      const m = mutate(r, header, evhdFields, resealEvhd);
      try { parseEvhdHeader(m, 'fuzz.evhd'); ok++; } catch (e) {
        assert.ok(isTyped(e), `iteration ${i}: ${String(e)}`);
        failed++;
      }
    }
    for (let i = 0; i < 1500; i++) {
      const m = mutate(r, header, evhdFields, resealEvhd);
      const file = Buffer.concat([m, image.subarray(Math.min(m.length, EVHD_HEADER_SIZE) === EVHD_HEADER_SIZE ? EVHD_HEADER_SIZE : image.length)]);
      try {
        const d = await openEvhd(MemoryDevice.from(file), key.clone());
        assert.ok(file.subarray(0, EVHD_HEADER_SIZE).equals(header), `open iteration ${i}: a changed header was accepted`);
        try {
          await d.read(0, Math.min(d.size, 20000));
          await d.write(d.size, Buffer.alloc(10, 1));
        } finally { await d.close(); }
        ok++;
      } catch (e) {
        assert.ok(isTyped(e), `open iteration ${i}: ${String(e)}`);
        if ((e as MedvError).code === 'EAUTH') forgedRefused++;
        failed++;
      }
    }
    assert.ok(forgedRefused > 50, `forged headers that pass the checksum are refused by the MAC (${forgedRefused})`);
    assert.ok(failed > 4000, `most mutations must be refused (ok ${ok}, failed ${failed})`);
  });

  it('5,000 mutated .enc files (passphrase and host key) unwrap or fail with MedvError', async () => {
    const key = DataKey.generate();
    const pass: KekSource = { kind: 'passphrase', passphrase: 'fuzz' };
    const hk = join(dir, 'host.key');
    await createHostKey(hk);
    const host: KekSource = { kind: 'hostkey', keyFile: hk };
    // Cheap Argon2id parameters are stored in the generated file, so unwrapping it is cheap too.
    const bases: Array<[Buffer, KekSource]> = [
      [await wrapDataKey(key, pass, { pwhash: { opslimit: 1, memlimit: 8192 } }), pass],
      [await wrapDataKey(key, host), host],
    ];
    const encFields: Field[] = [[8, 2], [10, 1], [11, 1], [12, 4], [16, 16], [32, 16], [48, 8], [56, 8], [64, 16], [80, 16], [104, 16], [120, 16]];
    const resealEnc = (b: Buffer) => { if (b.length >= 216) createHash('sha256').update(b.subarray(0, 184)).digest().copy(b, 184); };
    const r = prng(0x5eed);
    let ok = 0, failed = 0;
    const codes = new Map<string, number>();
    for (let i = 0; i < 5000; i++) {
      const [base, kek] = bases[i % 2];
      const m = mutate(r, base, encFields, resealEnc);
      try {
        const k = await unwrapDataKey(m, kek, 'fuzz.enc');
        assert.ok(k.key.equals(key.key), 'a successful unwrap gives the real key');
        k.dispose();
        ok++;
      } catch (e) {
        assert.ok(isTyped(e), `iteration ${i}: ${String(e)}`);
        codes.set((e as MedvError).code, (codes.get((e as MedvError).code) ?? 0) + 1);
        failed++;
      }
    }
    assert.ok(failed > 4000, `ok ${ok} failed ${failed}`);
    for (const c of ['ECHECKSUM', 'EFORMAT', 'ETRUNCATED', 'EBADKEY']) assert.ok((codes.get(c) ?? 0) > 0, `no ${c}: ${[...codes]}`);
  });
});
