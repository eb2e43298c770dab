/**
 * Pack measurements (not a test): a disk of /usr files on the 4 KiB grid (half used by default),
 * packed as version 1; then 3% of its used blocks rewritten (half in-place edits, half replaced)
 * and packed as version 2 against version 1. Prints pack MB/s, index bytes (and per GiB of disk
 * and per non-zero block), the .ckm sizes, and peak RSS.
 *
 *   node dist/bench/pack/measure.js [--size-mib 256] [--fill 0.5] [--dir /tmp/medv-bench-pack]
 */
import { closeSync, copyFileSync, openSync, readSync, statSync } from 'node:fs';
import { zstdCompress } from '../../src/formats/ckm/index.js';
import { join } from 'node:path';
import { FileDevice } from '../../src/block/file.js';
import { openImageKeys, packImage, verifyPack } from '../../src/pack/index.js';
import { makeUsrDisk, mutateDisk } from '../../test/pack/images.js';
import { arg, freshDir } from '../args.js';

const MiB = 1048576;
const sizeMiB = Number(arg('size-mib', '256'));
const fill = Number(arg('fill', '0.5'));
const dir = freshDir(arg('dir', '/tmp/medv-bench-pack'));
const kek = () => ({ kind: 'passphrase' as const, passphrase: 'bench' });
const v1 = join(dir, 'v1.raw');
const v2 = join(dir, 'v2.raw');

const used = makeUsrDisk(v1, sizeMiB * MiB, fill, 1);
copyFileSync(v1, v2);
const changed = mutateDisk(v2, 0.03, 2);
const keys = await openImageKeys(join(dir, 'keys'), 'bench', kek, { create: true, sign: true, wrap: { pwhash: { opslimit: 1, memlimit: 8192 } } });

async function packOne(raw: string, version: number, previous?: false) {
  const dev = await FileDevice.open(raw, { readOnly: true });
  const cpu0 = process.cpuUsage();
  try {
    const r = await packImage(dev, { name: 'bench', version, outDir: join(dir, previous === false ? 'full' : 'out'), keys, previous });
    const cpu = process.cpuUsage(cpu0);
    return { ...r, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
  } finally {
    await dev.close();
  }
}

const r1 = await packOne(v1, 1);
const r2 = await packOne(v2, 2);
const ver = await verifyPack(r1.indexPath, { keyDir: join(dir, 'keys'), kek });
keys.dispose();
let zstdAlone = 0;
{
  const fd = openSync(v2, 'r');
  const b = Buffer.alloc(4096);
  for (const off of changed) { readSync(fd, b, 0, 4096, off); zstdAlone += zstdCompress(b, 3).length; }
  closeSync(fd);
}
const nonZero = r1.stats.blocks - r1.stats.zeroBlocks;
const distinct = r1.stats.storedBlocks;
const result = {
  disk: { mib: sizeMiB, fill, nonZeroBlocks: nonZero, distinctBlocks: distinct, usedBlocksWritten: used },
  v1: {
    seconds: +r1.seconds.toFixed(2),
    cpuSeconds: +r1.cpuSeconds.toFixed(2),
    mbPerCpuSecondVirtual: +((sizeMiB * MiB) / 1e6 / r1.cpuSeconds).toFixed(1),
    mbPerSecondVirtual: +((sizeMiB * MiB) / 1e6 / r1.seconds).toFixed(1),
    mbPerSecondNonZero: +((nonZero * 4096) / 1e6 / r1.seconds).toFixed(1),
    packBytes: statSync(r1.packPath).size,
    indexBytes: statSync(r1.indexPath).size,
    indexBytesPerGiB: Math.round(statSync(r1.indexPath).size * (1024 / sizeMiB)),
    indexBytesPerNonZeroBlock: +(statSync(r1.indexPath).size / nonZero).toFixed(2),
  },
  v2: {
    changedBlocks: changed.length,
    changedBlocksEachZstdAlone: zstdAlone,
    seconds: +r2.seconds.toFixed(2),
    packBytes: statSync(r2.packPath).size,
    indexBytes: statSync(r2.indexPath).size,
    storedBlocks: r2.stats.storedBlocks,
    deltaBlocks: r2.stats.deltaBlocks,
  },
  verify: { seconds: +ver.seconds.toFixed(2), mbPerSecondNonZero: +((nonZero * 4096) / 1e6 / ver.seconds).toFixed(1) },
  peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
};
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
