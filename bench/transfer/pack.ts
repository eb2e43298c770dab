/**
 * Pack benchmark (not a test), the console side of bench/transfer:
 *
 *   1. pack speed: `medv image pack` against `casync make` (a blob into a fresh chunk store, its
 *      default chunking, zstd) of the same disk from the page cache, MB/s of disk size and the
 *      ratio, on two disks: the bench's disk (default 512 MiB, half of it /usr files on the 4 KiB
 *      grid, the rest zeros) and a disk of real files (default 768 MiB: an ext4 file system made
 *      by `mke2fs -d` from ~540 MB of /usr files, 85% of its blocks used).
 *   2. memory: peak RSS (VmHWM) of `medv image pack` and of `medv image fetch` (local path, no
 *      seed) on a small disk and on a 16 GiB one (sparse: its used part as large as the small
 *      disk's), to show the peak does not grow with the image size; and the bytes the pack read
 *      (rchar of /proc/PID/io): the holes of the sparse file are not read. Each disk of 1. is also
 *      fetched whole (local path, no seed) and that fetch's peak RSS printed.
 *
 * Each section prints the load average (`uptime`) before and after: on a shared machine compare
 * ratios within one run, not absolute speeds across runs.
 *
 * Pack speed: medv and casync alternate `--repeat` times (default 2); the table shows the fastest
 * run of each, the ratio of those and each pair's, and CPU time (user + system, all threads), which
 * a loaded machine disturbs less than wall time.
 *
 *   npm run bench:pack -- [--size-mib 512] [--real-mib 768] [--big-gib 16] [--repeat 2] [--dir /tmp/medv-bench-pack2]
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { makeUsrDisk, usrFiles } from '../../test/pack/images.js';
import { arg, freshDir } from '../args.js';
import { type Measured, measured } from '../proc.js';

const MiB = 1048576;
const sizeMiB = Number(arg('size-mib', '512'));
const realMiB = Number(arg('real-mib', '768'));
const bigGiB = Number(arg('big-gib', '16'));
const dir = freshDir(arg('dir', '/tmp/medv-bench-pack2'));
const hostKey = join(dir, 'host.key');
writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
const MEDV_BIN = new URL('../../../bin/medv', import.meta.url).pathname;
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
const repeat = Number(arg('repeat', '2'));
if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat is a whole number, 1 or more');

const env = { ...process.env, MEDV_PASSPHRASE: '' };
const medvArgs = (args: string[]) => [MEDV_BIN, ...args, '--host-key', hostKey];
function warm(file: string): void { spawnSync('cat', [file], { stdio: ['ignore', 'ignore', 'ignore'] }); }

/** An ext4 file system of `size` bytes made by mke2fs -d from about `bytes` of /usr files (their copy, staged beside it). */
function makeExt4Disk(path: string, size: number, bytes: number): void {
  const stage = `${path}.d`;
  rmSync(stage, { recursive: true, force: true });
  for (const f of usrFiles(['/usr/lib', '/usr/share', '/usr/bin'], bytes)) {
    const to = join(stage, f);
    mkdirSync(dirname(to), { recursive: true });
    try { copyFileSync(f, to); } catch { /* unreadable: skipped */ }
  }
  const r = spawnSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-N', '98304', '-d', stage, path, `${size / MiB}M`], { encoding: 'utf8' });
  rmSync(stage, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`mke2fs: ${r.stderr}`);
}

const hasCasync = spawnSync('casync', ['--version']).status === 0;
if (!hasCasync) console.log('casync is not installed (apt-get install casync): its rows are left out');

// 1. pack speed against casync
const disks: Array<[string, string, number]> = [];
const benchDisk = join(dir, 'disk.raw');
makeUsrDisk(benchDisk, sizeMiB * MiB, 0.5, 7);
disks.push([`${sizeMiB} MiB disk, half /usr files on the 4 KiB grid`, benchDisk, sizeMiB * MiB]);
const realDisk = join(dir, 'real.raw');
if (spawnSync('mke2fs', ['-V']).status === 0) {
  makeExt4Disk(realDisk, realMiB * MiB, Math.round(realMiB * MiB * 0.7));
  disks.push([`${realMiB} MiB ext4 of /usr files (mke2fs -d)`, realDisk, realMiB * MiB]);
} else {
  console.log('mke2fs is not installed (e2fsprogs): the disk of real files is left out');
}
for (const [label, disk, bytes] of disks) {
  console.log(`\npack speed, ${label} (from the page cache); load before: ${load()}`);
  const tag = label.split(' ')[0];
  const out = join(dir, `packed-${tag}`);
  // medv and casync alternated `repeat` times: a load spike of a shared machine hits one run, not one side
  const packs: Measured[] = [];
  const casyncs: Measured[] = [];
  for (let i = 0; i < repeat; i++) {
    rmSync(out, { recursive: true, force: true });
    warm(disk);
    const pack = await measured(process.execPath, medvArgs(['image', 'pack', disk, '--name', 'bench', '--version', '1', '--out', out, '--keys', join(dir, 'keys')]), env);
    if (pack.code !== 0) throw new Error(`medv image pack: ${pack.stderr}`);
    packs.push(pack);
    if (hasCasync) {
      warm(disk);
      const store = join(dir, `casync-${tag}.castr`);
      const casync = await measured('casync', ['make', `--store=${store}`, join(dir, `disk-${tag}.caibx`), disk]);
      if (casync.code !== 0) throw new Error(`casync make: ${casync.stderr}`);
      rmSync(store, { recursive: true, force: true });
      rmSync(join(dir, `disk-${tag}.caibx`), { force: true });
      casyncs.push(casync);
    }
  }
  const mbs = (s: number) => bytes / s / 1e6;
  const fastest = (ms: Measured[]) => ms.reduce<Measured | undefined>((a, m) => (!a || m.seconds < a.seconds ? m : a), undefined);
  const pack = fastest(packs)!;
  const casync = fastest(casyncs);
  console.log(`| packer (fastest of ${repeat}) | wall s | MB/s of disk | CPU s | MB of disk per CPU-second | peak RSS MiB |`);
  console.log('|---|---:|---:|---:|---:|---:|');
  const row = (what: string, m: Measured) => console.log(`| ${what} | ${m.seconds.toFixed(2)} | ${mbs(m.seconds).toFixed(0)} | ${m.cpuSeconds.toFixed(2)} | ${mbs(m.cpuSeconds).toFixed(0)} | ${m.peakMiB.toFixed(0)} |`);
  row('medv image pack', pack);
  if (casync) row('casync make (blob)', casync);
  if (casync) {
    console.log(`\nmedv pack / casync make: ${(casync.seconds / pack.seconds).toFixed(2)}x the MB/s (run by run: ${packs.map((p, i) => (casyncs[i].seconds / p.seconds).toFixed(2)).join(', ')}), ${(casync.cpuSeconds / pack.cpuSeconds).toFixed(2)}x the MB per CPU-second; load after: ${load()}`);
  }
  // A full fetch of the same image (local path, no seed): its peak RSS must not follow the data.
  const fetched = await measured(process.execPath, medvArgs(['image', 'fetch', join(out, 'bench_1.ckm.index'), '--out', join(dir, `fetched-${tag}.evhd`), '--keys', join(dir, 'keys')]),
    { ...env, XDG_CACHE_HOME: join(dir, 'cache') });
  if (fetched.code !== 0) throw new Error(`medv image fetch: ${fetched.stderr}`);
  console.log(`full fetch of it (local, no seed): ${fetched.seconds.toFixed(1)} s, peak RSS ${fetched.peakMiB.toFixed(0)} MiB; load after: ${load()}`);
  rmSync(out, { recursive: true, force: true });
  for (const f of [`fetched-${tag}.evhd`, `fetched-${tag}.enc`, `fetched-${tag}.evhd.index`]) rmSync(join(dir, f), { force: true });
}
rmSync(realDisk, { force: true });

// 2. peak RSS against image size: the same used data in a small and a big (sparse) disk
console.log(`\nmemory; load before: ${load()}`);
const rows: string[] = [];
for (const [label, bytes] of [[`${sizeMiB} MiB`, sizeMiB * MiB], [`${bigGiB} GiB`, bigGiB * 1024 * MiB]] as const) {
  const d = join(dir, `rss-${label.replace(' ', '')}.raw`);
  makeUsrDisk(d, sizeMiB * MiB, 0.5, 11);
  spawnSync('truncate', ['-s', String(bytes), d]);
  const out = join(dir, `rss-packed-${label.replace(' ', '')}`);
  const p = await measured(process.execPath, medvArgs(['image', 'pack', d, '--name', 'rss', '--version', '1', '--out', out, '--keys', join(dir, 'keys')]), env);
  if (p.code !== 0) throw new Error(`pack ${label}: ${p.stderr}`);
  const f = await measured(process.execPath, medvArgs(['image', 'fetch', join(out, 'rss_1.ckm.index'), '--out', join(dir, `rss-${label.replace(' ', '')}.evhd`), '--keys', join(dir, 'keys')]),
    { ...env, XDG_CACHE_HOME: join(dir, 'cache') });
  if (f.code !== 0) throw new Error(`fetch ${label}: ${f.stderr}`);
  rows.push(`| ${label} | ${p.peakMiB.toFixed(0)} | ${p.seconds.toFixed(1)} | ${(p.readBytes / MiB).toFixed(0)} | ${f.peakMiB.toFixed(0)} | ${f.seconds.toFixed(1)} |`);
  rmSync(d, { force: true });
}
console.log(`\npeak RSS against image size (the same ${sizeMiB / 2} MiB of used data; the rest zero, holes of a sparse file):`);
console.log('| virtual size | pack peak RSS MiB | pack s | pack read MiB (rchar) | fetch peak RSS MiB | fetch s |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const r of rows) console.log(r);
console.log(`load after: ${load()}`);
