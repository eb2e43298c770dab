/**
 * Transfer benchmark (not a test): a /usr-content disk (1 GiB, half used, by default), version 2
 * rewriting 3% of its used blocks in scattered places: half small in-place edits, half replaced
 * by content unrelated to the disk (`--replace binary`, the default: blocks of shared libraries
 * the disk does not hold; `--replace text`: blocks of headers and documentation). Measures, on
 * private nginx servers (bytes and requests from their access logs, `$bytes_sent`):
 *
 *   medv image fetch v1 (nothing local)                       full fetch
 *   medv image fetch v2 --seed v1.evhd                        the update (index, delta, packs)
 *   the same update from nginx with max_ranges 1              (a single-range server)
 *   zsync -i v1.raw  (zsyncmake -b 4096 v2.raw; control file included)
 *   rsync --no-W v2.raw onto a copy of v1.raw (rsync daemon on loopback; bytes both ways from --stats)
 *
 * and prints bytes, requests and wall time of each (and each medv fetch's peak RSS, VmHWM), with
 * ratios against medv, and the load average before and after (compare ratios within one run on a
 * shared machine).
 *
 * The update and zsync run `--repeat` times (default 2), alternated; the wall-time ratio takes the
 * fastest run of each side (and prints each pair's).
 *
 *   npm run bench:transfer -- [--size-mib 1024] [--fill 0.5] [--replace binary|text] [--repeat 2] [--dir /tmp/medv-bench-transfer]
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { MEDV_BIN, waitForFile } from '../../test/helpers/cli.js';
import { startNginx } from '../../test/helpers/nginx.js';
import { loadavg } from 'node:os';
import { BINARY_SOURCES, TEXT_SOURCES } from '../../test/pack/images.js';
import { makeRepo } from '../../test/transfer/fixture.js';
import { arg, freshDir } from '../args.js';
import { measured } from '../proc.js';

const sizeMiB = Number(arg('size-mib', '1024'));
const fill = Number(arg('fill', '0.5'));
const replace = arg('replace', 'binary');
const repeat = Number(arg('repeat', '2'));
if (!Number.isInteger(repeat) || repeat < 1) throw new Error('--repeat is a whole number, 1 or more');
if (replace !== 'binary' && replace !== 'text') throw new Error('--replace is binary or text');
const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
const dir = freshDir(arg('dir', '/tmp/medv-bench-transfer'));

const now = () => Number(process.hrtime.bigint()) / 1e9;
const t0 = now();
const r = makeRepo(dir, sizeMiB, fill, 1, replace === 'binary' ? BINARY_SOURCES : TEXT_SOURCES);
console.log(`repository: ${sizeMiB} MiB disk, ${r.changed.length} blocks changed in v2 (half replaced by ${replace} content); made and packed in ${(now() - t0).toFixed(0)} s`);
const nginx = await startNginx(join(dir, 'nginx'), r.repo);
const single = await startNginx(join(dir, 'nginx-single'), r.repo, { maxRanges: 1 });
console.log(`load before: ${load()}`);

interface Row { what: string; bytes: number; requests: number; seconds: number; peakMiB?: number; note?: string }
const rows: Row[] = [];
const medvFetch = async (what: string, args: string[], server = nginx) => {
  server.resetLog();
  const res = await measured(process.execPath, [MEDV_BIN, 'image', 'fetch', ...args, '--keys', r.keys, '--host-key', r.hostKey, '--json'], { ...process.env, ...r.env });
  if (res.code !== 0) throw new Error(`${what}: ${res.stderr}`);
  const j = JSON.parse(res.stdout);
  const index = server.bytes((u) => u.includes('.ckm.index'));
  rows.push({
    what, bytes: server.bytes(), requests: server.log().length, seconds: res.seconds, peakMiB: res.peakMiB,
    note: `${j.blocksFromSeeds} blocks from seeds (${j.seeds.every((x: { cached?: boolean }) => x.cached !== false) ? 'ids cached' : 'seed hashed'}), ${j.blocksFromNetwork} fetched; index ${index} B: records ${j.indexRecordsFetched} fetched / ${j.indexRecordsReused} reused / ${j.indexRecordsFromDelta} from the delta`,
  });
};

try {
  await medvFetch('medv fetch v1 (full)', [nginx.url('lab_1.ckm.index'), '--out', join(dir, 'v1.evhd')]);
  // zsync's control file, made once
  copyFileSync(r.v2, join(r.repo, 'v2.raw'));
  let s = now();
  const zm = spawnSync('zsyncmake', ['-b', '4096', '-o', join(r.repo, 'v2.raw.zsync'), '-u', 'v2.raw', join(r.repo, 'v2.raw')]);
  if (zm.status !== 0) throw new Error(`zsyncmake: ${zm.stderr}`);
  const zsyncmakeSeconds = now() - s;
  // the update and zsync alternated `repeat` times (a load spike of a shared machine hits one run, not one side)
  for (let i = 0; i < repeat; i++) {
    const again = i === 0 ? '' : ` (again, ${i + 1})`;
    mkdirSync(join(dir, `update-${i}`));
    await medvFetch(`medv fetch v2 --seed v1.evhd${again}`, [nginx.url('lab_2.ckm.index'), '--out', join(dir, `update-${i}`, 'v2.evhd'), '--seed', join(dir, 'v1.evhd')]);
    if (i === 0 && !r.sameAs(join(dir, 'update-0', 'v2.evhd'), r.v2)) throw new Error('medv: fetched v2 differs from the source');
    mkdirSync(join(dir, `zsync-${i}`));
    nginx.resetLog();
    s = now();
    const z = spawnSync('zsync', ['-q', '-i', r.v1, '-o', join(dir, `zsync-${i}`, 'v2.raw'), nginx.url('v2.raw.zsync')], { cwd: join(dir, `zsync-${i}`) });
    if (z.status !== 0) throw new Error(`zsync: ${z.stderr}`);
    rows.push({ what: `zsync -i v1.raw (-b 4096)${again}`, bytes: nginx.bytes(), requests: nginx.log().length, seconds: now() - s, note: `control file ${statSync(join(r.repo, 'v2.raw.zsync')).size} B, zsyncmake ${zsyncmakeSeconds.toFixed(1)} s` });
  }
  mkdirSync(join(dir, 'single'));
  await medvFetch('the same, nginx max_ranges 1', [single.url('lab_2.ckm.index'), '--out', join(dir, 'single', 'v2.evhd'), '--seed', join(dir, 'v1.evhd')], single);

  // rsync --no-W through a daemon on loopback
  if (spawnSync('rsync', ['--version']).status === 0) {
    const port = await new Promise<number>((res) => { const srv = createServer(); srv.listen(0, '127.0.0.1', () => { const p = (srv.address() as { port: number }).port; srv.close(() => res(p)); }); });
    const conf = join(dir, 'rsyncd.conf');
    writeFileSync(conf, `pid file = ${join(dir, 'rsyncd.pid')}\nuse chroot = no\n[repo]\n  path = ${r.repo}\n  read only = yes\n`);
    const d = spawn('rsync', ['--daemon', '--no-detach', `--config=${conf}`, `--port=${port}`, '--address=127.0.0.1'], { stdio: 'ignore' });
    try {
      await waitForFile(join(dir, 'rsyncd.pid'), 15_000);
      mkdirSync(join(dir, 'rsync'));
      copyFileSync(r.v1, join(dir, 'rsync', 'v2.raw'));
      s = now();
      const rs = spawnSync('rsync', ['--no-W', '--inplace', '--stats', `rsync://127.0.0.1:${port}/repo/v2.raw`, join(dir, 'rsync', 'v2.raw')], { encoding: 'utf8' });
      if (rs.status !== 0) throw new Error(`rsync: ${rs.stderr}`);
      const num = (re: RegExp) => Number((re.exec(rs.stdout)?.[1] ?? '0').replace(/,/g, ''));
      const received = num(/Total bytes received: ([\d,]+)/);
      const sent = num(/Total bytes sent: ([\d,]+)/);
      rows.push({ what: 'rsync --no-W (daemon)', bytes: received + sent, requests: 1, seconds: now() - s, note: `${received} B down, ${sent} B up (block checksums)` });
    } finally {
      d.kill();
    }
  } else {
    console.log('rsync is not installed: its row is left out');
  }
} finally {
  await nginx.stop();
  await single.stop();
}

const update = rows.find((x) => x.what.startsWith('medv fetch v2'))!;
console.log('\n| transfer | bytes | requests | wall s | peak RSS MiB | vs medv update (bytes) | |');
console.log('|---|---:|---:|---:|---:|---:|---|');
for (const x of rows) console.log(`| ${x.what} | ${x.bytes.toLocaleString('en')} | ${x.requests} | ${x.seconds.toFixed(1)} | ${x.peakMiB === undefined ? '' : x.peakMiB.toFixed(0)} | ${(x.bytes / update.bytes).toFixed(2)}x | ${x.note ?? ''} |`);
const fastest = (prefix: string) => rows.filter((x) => x.what.startsWith(prefix)).reduce<Row | undefined>((a, x) => (!a || x.seconds < a.seconds ? x : a), undefined);
const medvBest = fastest('medv fetch v2')!;
const zs = fastest('zsync');
const rsy = fastest('rsync');
const wall = (x: Row | undefined) => (x ? (medvBest.seconds / x.seconds).toFixed(2) : '-');
const bytes = (x: Row | undefined) => (x ? (update.bytes / x.bytes).toFixed(3) : '-');
console.log(`\nmedv update / zsync: ${bytes(zs)} bytes, ${wall(zs)} wall (fastest of ${repeat} alternated runs each); medv update / rsync: ${bytes(rsy)} bytes, ${wall(rsy)} wall`);
const pairs = rows.filter((x) => x.what.startsWith('medv fetch v2')).map((m, i) => (m.seconds / rows.filter((x) => x.what.startsWith('zsync'))[i].seconds).toFixed(2));
console.log(`medv update / zsync wall, run by run: ${pairs.join(', ')}`);
console.log(`medv update peak RSS (VmHWM), run by run: ${rows.filter((x) => x.what.startsWith('medv fetch v2')).map((x) => `${x.peakMiB!.toFixed(0)} MiB`).join(', ')}`);
console.log(`single-range server: ${rows.find((x) => x.what.includes('max_ranges'))!.requests} requests; load after: ${load()}`);
