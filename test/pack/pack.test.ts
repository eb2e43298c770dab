/**
 * packImage / verifyPack on real files: round trip byte for byte, dedup, zero blocks, version N+1
 * against N (judged by the .ckm sizes a user sees and by `zstd` itself), and every hostile case:
 * bad signature, untrusted signer, flipped byte, truncated pack, offsets past the pack, a block of
 * another image swapped in, another packing run's pack, the wrong content key.
 */
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, cpSync, mkdirSync, openSync, readFileSync, readdirSync, statSync, truncateSync, writeFileSync, writeSync, appendFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BlockDevice } from '../../src/block/device.js';
import { readByCopy } from '../../src/block/emulate.js';
import { FileDevice } from '../../src/block/file.js';
import { MedvError } from '../../src/core/errors.js';
import { CKM_MAX_STORED, PACK_HEADER_SIZE } from '../../src/formats/ckm/index.js';
import { IndexFile, type PackResult, openPackedImage, packImage, verifyPack } from '../../src/pack/index.js';
import { containsPattern, run, sha256File, tempDir } from '../helpers/cli.js';
import { openDisk } from '../../src/layers/open.js';
import { forgeIndex, kek, testKeys, unpackToRaw } from './helpers.js';
import { makeUsrDisk, mutateDisk, zstdAlone } from './images.js';

const MiB = 1048576;
const code = (c: string, re?: RegExp) => (e: unknown) => {
  if (!(e instanceof MedvError) || e.code !== c) return false;
  return re ? re.test(e.message) : true;
};

async function pack(raw: string, name: string, version: number, outDir: string, keyDir: string, previous?: string | false, workers?: number): Promise<PackResult> {
  const keys = await testKeys(keyDir, name);
  const dev = await FileDevice.open(raw, { readOnly: true });
  try {
    return await packImage(dev, { name, version, outDir, keys, previous, workers });
  } finally {
    await dev.close();
    keys.dispose();
  }
}

/** `dev` with every byte read through read() or readInto() counted (and no fileRange: the workers would read the file themselves). */
function countingReads(dev: BlockDevice, count: (bytes: number) => void): BlockDevice {
  return Object.create(dev, {
    read: { value: (off: number, len: number) => { count(len); return dev.read(off, len); } },
    readInto: { value: (buf: Buffer, off: number) => { count(buf.length); return dev.readInto ? dev.readInto(buf, off) : readByCopy(dev, buf, off); } },
    fileRange: { value: undefined },
  });
}

/** Bytes this process has read with read system calls so far, all threads (rchar of /proc/self/io). */
function bytesReadByProcess(): number {
  return Number(/rchar:\s+(\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
}

describe('pack: packImage and verifyPack', function () {
  this.timeout(60_000);
  const t = tempDir('pack');
  const keyDir = join(t.path, 'keys');
  const out = join(t.path, 'out');
  const v1 = join(t.path, 'v1.raw');
  const v2 = join(t.path, 'v2.raw');
  let r1: PackResult;
  let changed: number[];

  before(async () => {
    makeUsrDisk(v1, 16 * MiB + 12 * 1024, 0.5, 11); // a last run of 3 blocks
    r1 = await pack(v1, 'lab', 1, out, keyDir, undefined, 0);
    copyFileSync(v1, v2);
    changed = mutateDisk(v2, 0.03, 12);
  });
  after(() => t.cleanup());

  it('packs a disk and gives it back byte for byte', async () => {
    const v = await verifyPack(r1.indexPath, { keyDir, kek });
    assert.equal(v.version, 1);
    const back = join(t.path, 'v1.back.raw');
    await unpackToRaw(r1.indexPath, keyDir, back);
    assert.equal(statSync(back).size, statSync(v1).size);
    assert.equal(sha256File(back), sha256File(v1));
    assert.ok(statSync(r1.packPath).size < statSync(v1).size / 2, 'half the disk is zeros and the rest compresses');
    assert.deepEqual(readdirSync(out).filter((f) => f.startsWith('.')), []);
  });

  it('worker threads pack the same blocks as the main thread alone', async () => {
    const r = await pack(v1, 'lab', 1, join(t.path, 'workers'), keyDir, false, 2);
    assert.equal(statSync(r.packPath).size, statSync(r1.packPath).size);
    assert.equal(statSync(r.indexPath).size, statSync(r1.indexPath).size);
    const back = join(t.path, 'workers.back.raw');
    await unpackToRaw(r.indexPath, keyDir, back);
    assert.equal(sha256File(back), sha256File(v1));
  });

  it('no plaintext in the pack or the index', async () => {
    const raw = join(t.path, 'marker.raw');
    const marker = Buffer.from('MEDV-PLAINTEXT-MARKER-0123456789abcdef/');
    const disk = Buffer.alloc(2 * MiB);
    for (let off = 0; off < disk.length; off += 8192) for (let i = 0; i < 4096; i += marker.length) marker.copy(disk, off + i, 0, Math.min(marker.length, 4096 - i));
    writeFileSync(raw, disk);
    const r = await pack(raw, 'marker', 1, join(t.path, 'marker'), keyDir);
    assert.ok(containsPattern(raw, marker), 'the pattern is there to find');
    assert.equal(containsPattern(r.packPath, marker), false);
    assert.equal(containsPattern(r.indexPath, marker), false);
  });

  it('a read failure half way leaves nothing in the output folder', async () => {
    const keys = await testKeys(keyDir, 'fail');
    const dev = await FileDevice.open(v1, { readOnly: true });
    let reads = 0;
    // error injection: the real file below, a failing read on the 9th run
    const fail = () => { if (++reads === 9) throw new MedvError('EIO', 'injected read failure'); };
    const failing = Object.create(dev, {
      read: { value: async (off: number, len: number) => { fail(); return dev.read(off, len); } },
      readInto: { value: async (buf: Buffer, off: number) => { fail(); return dev.readInto(buf, off); } },
      fileRange: { value: undefined },
    });
    const dir = join(t.path, 'failing');
    try {
      await assert.rejects(packImage(failing, { name: 'fail', version: 1, outDir: dir, keys, workers: 0 }), code('EIO', /injected/));
    } finally {
      await dev.close();
      keys.dispose();
    }
    assert.deepEqual(readdirSync(dir), []);
  });

  it('skips the unallocated regions of a dynamic VHD without reading them (qemu-img made, qemu-io written)', async () => {
    const vhd = join(t.path, 'sparse.vhd');
    run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', vhd, '1G']);
    run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x55 0 1M', '-c', 'write -P 0xaa 300M 64k', '-c', 'write -P 0x0f 1000M 4k', vhd]);
    const opened = await openDisk(vhd, { readOnly: true });
    let readBytes = 0;
    const counting = countingReads(opened.device, (n) => { readBytes += n; });
    const keys = await testKeys(keyDir, 'sparse');
    let r: PackResult;
    try {
      r = await packImage(counting, { name: 'sparse', version: 1, outDir: join(t.path, 'sparse'), keys });
    } finally {
      await opened.device.close();
      keys.dispose();
    }
    assert.ok(readBytes <= 8 * MiB, `read ${readBytes} bytes of a 1 GiB disk holding 1.07 MiB`);
    const back = join(t.path, 'sparse.back.raw');
    await unpackToRaw(r.indexPath, keyDir, back);
    run('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'vpc', back, vhd]);
  });

  it('a 16 GiB sparse raw disk is packed reading only its data (the holes of the file are never read)', async () => {
    const raw = join(t.path, 'sparse16.raw');
    const G = 1 << 30;
    writeFileSync(raw, Buffer.alloc(0));
    truncateSync(raw, 16 * G);
    const data = readFileSync(v1).subarray(0, 4 * MiB);
    const fd = openSync(raw, 'r+');
    try {
      // data at the start, in the middle (not on a run boundary) and at the very end
      for (const at of [0, 7 * G + 12 * 4096, 16 * G - 2 * MiB]) writeSync(fd, data, 0, 2 * MiB, at);
    } finally {
      closeSync(fd);
    }
    const dev = await FileDevice.open(raw, { readOnly: true });
    let readBytes = 0;
    const keys = await testKeys(keyDir, 'sparse16');
    let r: PackResult;
    try {
      r = await packImage(countingReads(dev, (n) => { readBytes += n; }), { name: 'sparse16', version: 1, outDir: join(t.path, 'sparse16'), keys });
    } finally {
      await dev.close();
      keys.dispose();
    }
    assert.ok(readBytes <= 6 * MiB, `read ${readBytes} bytes of a 16 GiB file holding 6 MiB`);
    assert.equal(r.stats.zeroBlocks + r.stats.storedBlocks + r.stats.dedupBlocks, 4 * 1024 * 1024);
    // and with the workers reading the file themselves (its fileRange): what the process read in all
    const keys2 = await testKeys(keyDir, 'sparse16');
    const dev2 = await FileDevice.open(raw, { readOnly: true });
    const before = bytesReadByProcess();
    try {
      await packImage(dev2, { name: 'sparse16', version: 1, outDir: join(t.path, 'sparse16-workers'), keys: keys2, workers: 2 });
    } finally {
      await dev2.close();
      keys2.dispose();
    }
    const read = bytesReadByProcess() - before;
    assert.ok(read <= 24 * MiB, `the process read ${read} bytes packing a 16 GiB file holding 6 MiB (workers' own module files included)`);
    const img = await openPackedImage(r.indexPath, { keyDir, kek });
    try {
      const offsets: number[] = [];
      for await (const b of img.blocks()) offsets.push(b.offset);
      assert.ok(offsets.some((o) => o >= 7 * G && o < 7 * G + 2 * MiB + 12 * 4096) && offsets.some((o) => o >= 16 * G - 2 * MiB));
      assert.equal(offsets.length, r.stats.storedBlocks + r.stats.dedupBlocks);
    } finally {
      await img.close();
    }
  });

  it('stores identical blocks once and zero blocks never', async () => {
    const raw = join(t.path, 'same.raw');
    const block = Buffer.alloc(4096);
    for (let i = 0; i < 4096; i++) block[i] = (i * 7919) % 251; // compresses poorly enough to matter
    writeFileSync(raw, Buffer.alloc(0));
    for (let i = 0; i < 1024; i++) appendFileSync(raw, i % 2 ? block : Buffer.alloc(4096));
    const r = await pack(raw, 'same', 1, join(t.path, 'same'), keyDir);
    assert.ok(statSync(r.packPath).size <= PACK_HEADER_SIZE + CKM_MAX_STORED, `one block stored (${statSync(r.packPath).size} bytes)`);
    const back = join(t.path, 'same.back.raw');
    await unpackToRaw(r.indexPath, keyDir, back);
    assert.equal(sha256File(back), sha256File(raw));
  });

  it('version 2 packed against version 1 stores only the changed blocks', async () => {
    const r2 = await pack(v2, 'lab', 2, out, keyDir);
    const v2Pack = statSync(r2.packPath).size;
    const alone = zstdAlone(v2, changed, join(t.path, 'alone'));
    assert.ok(v2Pack <= 1.3 * alone, `v2 pack ${v2Pack} bytes, changed blocks each zstd-compressed: ${alone}`);
    assert.ok(v2Pack < statSync(r1.packPath).size * 0.06, `v2 pack ${v2Pack} against v1 ${statSync(r1.packPath).size}`);
    const back = join(t.path, 'v2.back.raw');
    await unpackToRaw(r2.indexPath, keyDir, back);
    assert.equal(sha256File(back), sha256File(v2));
    assert.equal((await verifyPack(r2.indexPath, { keyDir, kek })).packs.join(','), '1,2');
    // without the previous version, the same disk costs a whole pack again
    const full = await pack(v2, 'lab', 2, join(t.path, 'full'), keyDir, false);
    assert.ok(statSync(full.packPath).size > 0.9 * statSync(r1.packPath).size);
    // a version that changes nothing adds an empty pack
    const r3 = await pack(v2, 'lab', 3, out, keyDir);
    assert.equal(statSync(r3.packPath).size, PACK_HEADER_SIZE);
    const back3 = join(t.path, 'v3.back.raw');
    await unpackToRaw(r3.indexPath, keyDir, back3);
    assert.equal(sha256File(back3), sha256File(v2));
  });

  it('a localized change changes only its run: the other run hashes of version N stay valid', async () => {
    const local = join(t.path, 'local.raw');
    copyFileSync(v1, local);
    // rewrite two non-zero blocks inside run 5 (bytes 5 MiB .. 6 MiB)
    const buf = readFileSync(local);
    let done = 0;
    for (let off = 5 * MiB; off < 6 * MiB && done < 2; off += 4096) {
      if (buf.subarray(off, off + 4096).some((x) => x !== 0)) { buf[off + 100] ^= 0xff; done++; }
    }
    assert.equal(done, 2);
    writeFileSync(local, buf);
    const dir = join(t.path, 'local');
    mkdirSync(dir);
    for (const f of ['lab_1.ckm', 'lab_1.ckm.index']) copyFileSync(join(out, f), join(dir, f));
    const r = await pack(local, 'lab', 2, dir, keyDir);
    const keys = await testKeys(keyDir, 'lab');
    const a = await IndexFile.open(r1.indexPath);
    const b = await IndexFile.open(r.indexPath);
    try {
      await a.verify(keys.trusted);
      await b.verify(keys.trusted);
      const changedRuns = a.runDirectory.hashes.map((h, i) => (h.equals(b.runDirectory.hashes[i]) ? -1 : i)).filter((i) => i >= 0);
      assert.deepEqual(changedRuns, [5]);
    } finally {
      await a.close();
      await b.close();
      keys.dispose();
    }
  });

  it('refuses to overwrite a published version and leaves no temporary files', async () => {
    await assert.rejects(pack(v1, 'lab', 1, out, keyDir), code('EEXIST'));
    assert.deepEqual(readdirSync(out).filter((f) => f.startsWith('.')), []);
  });

  describe('hostile repositories', () => {
    let n = 0;
    /** A private copy of version 1's files to damage. */
    function copyOut(): { dir: string; index: string; pack: string } {
      const dir = join(t.path, `hostile${n++}`);
      mkdirSync(dir);
      for (const f of ['lab_1.ckm', 'lab_1.ckm.index']) copyFileSync(join(out, f), join(dir, f));
      return { dir, index: join(dir, 'lab_1.ckm.index'), pack: join(dir, 'lab_1.ckm') };
    }

    it('a flipped byte in a block: EBADBLOCK naming the pack and the block offset', async () => {
      const c = copyOut();
      const buf = readFileSync(c.pack);
      const at = Math.floor(buf.length / 2);
      buf[at] ^= 0x01;
      writeFileSync(c.pack, buf);
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), (e) => {
        assert.ok(code('EBADBLOCK')(e), String(e));
        const d = (e as MedvError).data;
        assert.equal(d.file, c.pack);
        assert.ok(Number(d.offset) <= at && at < Number(d.offset) + CKM_MAX_STORED);
        return true;
      });
    });

    it('a truncated pack: ETRUNCATED before any block is read', async () => {
      const c = copyOut();
      truncateSync(c.pack, statSync(c.pack).size - 100);
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('ETRUNCATED'));
    });

    it('a changed byte in the signed header: ESIGNATURE', async () => {
      const c = copyOut();
      const buf = readFileSync(c.index);
      buf[128] ^= 0x01; // creation time
      writeFileSync(c.index, buf);
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('ESIGNATURE', /does not verify/));
    });

    it('a changed run directory or record: ECHECKSUM', async () => {
      const c = copyOut();
      const buf = readFileSync(c.index);
      buf[buf.length - 3] ^= 0x40;
      writeFileSync(c.index, buf);
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), (e) => code('ECHECKSUM')(e) || code('ECORRUPT')(e));
    });

    it('an index signed by a key that is not trusted: ESIGNATURE', async () => {
      const other = join(t.path, 'other-console');
      (await testKeys(other, 'lab')).dispose();
      // same image keys, another console's signing key
      for (const f of ['repository.key.enc', 'images/lab.key.enc']) copyFileSync(join(keyDir, f), join(other, f));
      const c = copyOut();
      await assert.rejects(verifyPack(c.index, { keyDir: other, kek }), code('ESIGNATURE', /not a trusted key/));
    });

    it('an index whose offsets point past the pack: ECORRUPT', async () => {
      const c = copyOut();
      const keys = await testKeys(keyDir, 'lab');
      const packLength = statSync(c.pack).size;
      try {
        forgeIndex(c.index, keys, (run, rec) => {
          if (run === 0) rec.entries[0].place.offset = packLength - 10;
        });
      } finally { keys.dispose(); }
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('ECORRUPT', /past the end of pack 1/));
    });

    it('a block of another image swapped in: EBADBLOCK', async () => {
      // the same disk packed as another image: same block ids, same lengths, another content key
      const otherOut = join(t.path, 'other-image');
      const ro = await pack(v1, 'lab2', 1, otherOut, keyDir);
      const c = copyOut();
      const mine = readFileSync(c.pack);
      const theirs = readFileSync(ro.packPath);
      assert.equal(theirs.length, mine.length);
      theirs.copy(mine, PACK_HEADER_SIZE, PACK_HEADER_SIZE);
      writeFileSync(c.pack, mine);
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('EBADBLOCK', /does not authenticate/));
    });

    it('a pack from another packing run of the same version: ECORRUPT (salt)', async () => {
      const again = join(t.path, 'again');
      const ra = await pack(v1, 'lab', 1, again, keyDir);
      const c = copyOut();
      copyFileSync(ra.packPath, c.pack);
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('ECORRUPT', /salt/));
    });

    it('the wrong content key for the image name: EBADKEY, before any block', async () => {
      const wrong = join(t.path, 'wrong-keys');
      cpSync(keyDir, wrong, { recursive: true });
      rmSync(join(wrong, 'images', 'lab.key.enc'));
      (await testKeys(wrong, 'lab')).dispose();
      const c = copyOut();
      await assert.rejects(verifyPack(c.index, { keyDir: wrong, kek }), code('EBADKEY'));
    });

    it('a truncated or extended index: ETRUNCATED / ECORRUPT', async () => {
      const c = copyOut();
      const buf = readFileSync(c.index);
      writeFileSync(c.index, buf.subarray(0, buf.length - 1));
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('ETRUNCATED'));
      writeFileSync(c.index, Buffer.concat([buf, Buffer.alloc(1)]));
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('ECORRUPT'));
      writeFileSync(c.index, buf.subarray(0, 100));
      await assert.rejects(verifyPack(c.index, { keyDir, kek }), code('ETRUNCATED'));
    });
  });
});
