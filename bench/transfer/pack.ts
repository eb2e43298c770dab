/**
 * Pack benchmark (not a test), the console side of bench/transfer:
 *
 *   1. pack speed: `medv image pack` of a /usr-content disk (default 512 MiB, half used) against
 *      `casync make` of the same disk as a blob into a chunk store (its default chunking, zstd),
 *      both from the page cache; MB/s of disk size, and the ratio.
 *   2. memory: peak RSS (VmHWM) of `medv image pack` and of `medv image fetch` (local path, no
 *      seed) on a small disk and on a 16 GiB one (mostly zero, its used part as large as the
 *      small disk's), to show the peak does not grow with the image size.
 *
 *   npm run bench:pack -- [--size-mib 512] [--big-gib 16] [--dir /tmp/medv-bench-pack2]
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { makeUsrDisk } from '../../test/pack/images.js';
import { arg, freshDir } from '../args.js';

const MiB = 1048576;
const sizeMiB = Number(arg('size-mib', '512'));
const bigGiB = Number(arg('big-gib', '16'));
const dir = freshDir(arg('dir', '/tmp/medv-bench-pack2'));
const hostKey = join(dir, 'host.key');
writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
const MEDV_BIN = new URL('../../../bin/medv', import.meta.url).pathname;
const now = () => Number(process.hrtime.bigint()) / 1e9;

/** Runs a command; returns its wall time and peak RSS (VmHWM, polled from /proc until it exits). */
function measured(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ seconds: number; peakMiB: number; code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const s = now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d) => { stderr += d; });
    let peak = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) / 1024);
      } catch { /* exited */ }
    }, 20);
    child.once('exit', (code) => { clearInterval(poll); resolve({ seconds: now() - s, peakMiB: peak, code, stderr }); });
  });
}

const env = { ...process.env, MEDV_PASSPHRASE: '' };
const medvArgs = (args: string[]) => [MEDV_BIN, ...args, '--host-key', hostKey];
function warm(file: string): void { spawnSync('cat', [file], { stdio: ['ignore', 'ignore', 'ignore'] }); }

// 1. pack speed against casync
const disk = join(dir, 'disk.raw');
makeUsrDisk(disk, sizeMiB * MiB, 0.5, 7);
warm(disk);
const pack = await measured(process.execPath, medvArgs(['image', 'pack', disk, '--name', 'bench', '--version', '1', '--out', join(dir, 'packed'), '--keys', join(dir, 'keys')]), env);
if (pack.code !== 0) throw new Error(`medv image pack: ${pack.stderr}`);
let casync: { seconds: number; peakMiB: number } | undefined;
if (spawnSync('casync', ['--version']).status === 0) {
  warm(disk);
  const c = await measured('casync', ['make', `--store=${join(dir, 'casync.castr')}`, join(dir, 'disk.caibx'), disk]);
  if (c.code !== 0) throw new Error(`casync make: ${c.stderr}`);
  casync = c;
} else {
  console.log('casync is not installed (apt-get install casync): its row is left out');
}
const mbs = (s: number) => (sizeMiB * MiB) / s / 1e6;
console.log(`\npack speed, ${sizeMiB} MiB disk half full of /usr files (from the page cache):`);
console.log('| packer | wall s | MB/s of disk | peak RSS MiB |');
console.log('|---|---:|---:|---:|');
console.log(`| medv image pack | ${pack.seconds.toFixed(2)} | ${mbs(pack.seconds).toFixed(0)} | ${pack.peakMiB.toFixed(0)} |`);
if (casync) console.log(`| casync make (blob) | ${casync.seconds.toFixed(2)} | ${mbs(casync.seconds).toFixed(0)} | ${casync.peakMiB.toFixed(0)} |`);
if (casync) console.log(`\nmedv pack / casync make: ${(mbs(pack.seconds) / mbs(casync.seconds)).toFixed(2)}x the MB/s`);

// 2. peak RSS against image size: the same used data in a small and a big (sparse) disk
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
  rows.push(`| ${label} | ${p.peakMiB.toFixed(0)} | ${p.seconds.toFixed(1)} | ${f.peakMiB.toFixed(0)} | ${f.seconds.toFixed(1)} |`);
  rmSync(d, { force: true });
}
console.log(`\npeak RSS against image size (the same ${sizeMiB / 2} MiB of used data; the rest zero):`);
console.log('| virtual size | pack peak RSS MiB | pack s | fetch peak RSS MiB | fetch s |');
console.log('|---|---:|---:|---:|---:|');
for (const r of rows) console.log(r);
