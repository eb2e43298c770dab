/**
 * The encrypted saved state (.vsv v2) as a library: what one pass of frames() yields, and that
 * every change to the file is refused with a typed error before the stream completes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHostKey, type KekSource } from '../../src/crypto/index.js';
import { MAX_FRAME, SavedStateReader, SavedStateWriter } from '../../src/hypervisor/savedstate.js';
import { tempDir } from '../helpers/cli.js';

describe('hypervisor: encrypted saved state (.vsv)', () => {
  let dir: ReturnType<typeof tempDir>;
  let kek: KekSource;
  let stream: Buffer;
  let vsv: string;
  const meta = { vm: 'x', memoryMiB: 256, createdAt: '2026-12-02T00:00:00.000Z', disks: [{ path: '/d.vhd', size: 1, mtimeNs: '2', ino: 3 }] };

  beforeEach(async () => {
    dir = tempDir('vsv');
    await createHostKey(join(dir.path, 'host.key'));
    kek = { kind: 'hostkey', keyFile: join(dir.path, 'host.key') };
    // Chunks as a socket delivers them, around and across the frame size.
    stream = randomBytes(3 * MAX_FRAME + 12345);
    vsv = join(dir.path, 'x.vsv');
    const w = SavedStateWriter.create(vsv, kek, 256);
    let at = 0;
    for (const n of [1, 65536, MAX_FRAME, 2 * MAX_FRAME + 7, Infinity]) {
      const end = Math.min(stream.length, at + n);
      w.write(stream.subarray(at, end));
      at = end;
    }
    await w.finish(meta);
  });
  afterEach(() => dir.cleanup());

  async function readAll(r: SavedStateReader): Promise<{ data: Buffer; meta: unknown }> {
    const parts: Buffer[] = [];
    const it = r.frames();
    for (;;) {
      const x = await it.next();
      if (x.done) return { data: Buffer.concat(parts), meta: x.value };
      parts.push(x.value);
    }
  }

  it('round trip: the RAM size is in the header, the metadata known at open, the stream in one pass', async () => {
    assert.equal(SavedStateReader.peek(vsv).memoryMiB, 256);
    const r = await SavedStateReader.open(vsv, kek);
    try {
      assert.deepEqual(r.meta, { ...meta, streamBytes: stream.length });
      const all = await readAll(r);
      assert.ok(all.data.equals(stream));
      assert.deepEqual(all.meta, r.meta);
    } finally { r.close(); }
  });

  /** Descriptors of this process open on a file in `folder` (by /proc/self/fd's links). */
  function openIn(folder: string): string[] {
    const out: string[] = [];
    for (const fd of readdirSync('/proc/self/fd')) {
      try { const to = readlinkSync(`/proc/self/fd/${fd}`); if (to.startsWith(`${folder}/`)) out.push(to); } catch { /* closed meanwhile */ }
    }
    return out;
  }

  it('a stream larger than the background flush interval (flushed while written): published whole, nothing left open; an abort mid-flush leaves no file and no descriptor', async () => {
    const big = Buffer.alloc(150 * MAX_FRAME);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i); // distinct pages, cheap to make
    const path = join(dir.path, 'big.vsv');
    const w = SavedStateWriter.create(path, kek, 256);
    for (let at = 0; at < big.length; at += 4 * MAX_FRAME) w.write(big.subarray(at, at + 4 * MAX_FRAME));
    w.syncWritten();
    await w.finish(meta);
    assert.deepEqual(openIn(dir.path), [], 'no descriptor left on the .vsv');
    const r = await SavedStateReader.open(path, kek);
    try {
      assert.ok((await readAll(r)).data.equals(big));
    } finally { r.close(); }

    const cut = join(dir.path, 'cut.vsv');
    const a = SavedStateWriter.create(cut, kek, 256);
    for (let at = 0; at < 70 * MAX_FRAME; at += 4 * MAX_FRAME) a.write(big.subarray(at, at + 4 * MAX_FRAME));
    a.abort();
    await new Promise((res) => setTimeout(res, 0)); // the flush's descriptor closes when the flush ends
    for (let i = 0; i < 100 && openIn(dir.path).length; i++) await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(openIn(dir.path), [], 'no descriptor left on the aborted temporary');
    assert.deepEqual(readdirSync(dir.path).filter((f) => f.startsWith('cut')), [], 'nothing of the aborted .vsv is left');
  });

  it('a flipped byte in the trailer or the header is refused at open (ECRYPTO), before any frame', async () => {
    const good = readFileSync(vsv);
    for (const at of [good.length - 20, 52]) {
      const bad = Buffer.from(good);
      bad[at] ^= 0x40;
      writeFileSync(vsv, bad);
      await assert.rejects(SavedStateReader.open(vsv, kek), (e: { code?: string }) => e.code === 'ECRYPTO', `byte ${at}`);
    }
  });

  it('a flipped byte in a frame: the frames before it come out, then ECRYPTO; the stream never completes', async () => {
    const bad = readFileSync(vsv);
    bad[56 + 4 + 2 * (MAX_FRAME + 21) + 100] ^= 0x01; // inside the third frame
    writeFileSync(vsv, bad);
    const r = await SavedStateReader.open(vsv, kek);
    try {
      let got = 0;
      const it = r.frames();
      await assert.rejects((async () => { for (;;) { const x = await it.next(); if (x.done) throw new Error('completed'); got += x.value.length; } })(),
        (e: { code?: string }) => e.code === 'ECRYPTO');
      assert.equal(got, 2 * MAX_FRAME);
    } finally { r.close(); }
  });

  it('a file cut anywhere is refused (ETRUNCATED or ECRYPTO), never read as complete', async () => {
    const good = readFileSync(vsv);
    for (const cut of [good.length - 1, good.length - 13, 56 + MAX_FRAME]) {
      writeFileSync(vsv, good.subarray(0, cut));
      await assert.rejects(async () => { const r = await SavedStateReader.open(vsv, kek); try { await readAll(r); } finally { r.close(); } },
        (e: { code?: string }) => e.code === 'ETRUNCATED' || e.code === 'ECRYPTO' || e.code === 'EFORMAT', `cut at ${cut}`);
    }
  });
});
