/**
 * Disk benchmark: the same random data served over a unix-socket NBD export by
 *   raw          qemu-nbd -f raw                       (the ceiling)
 *   qemu-luks    qemu-nbd, LUKS image (aes-256-xts)
 *   nbdkit-luks  nbdkit file --filter=luks
 *   medv         medv disk serve X.evhd (EVHD -> dynamic VHD)
 *   nbdkit-raw   nbdkit file                           (a second ceiling, for attribution)
 *   medv-raw     medv disk serve data.raw              (our NBD server alone, for attribution)
 * each driven by the same clients: fio (nbd engine) 1 MiB seq read qd8, 4 KiB rand read qd32,
 * 1 MiB seq write qd8, and `nbdcopy URI null:` (three rounds, median). Prints MB/s and IOPS per server and medv's ratios,
 * and writes bench/out/disk.json.
 *
 * Usage: node dist/bench/disk/bench.js [--size 1G] [--runtime 10] [--only raw,qemu-luks,nbdkit-luks,medv,nbdkit-raw,medv-raw] [--keep] [--prof DIR]
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, createReadStream, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const CLI = join(ROOT, 'dist/src/cli/main.js');
const PASS = 'medv-bench-passphrase';

interface Args { size: number; runtime: number; only?: Set<string>; keep: boolean; prof?: string }

function parseArgs(argv: string[]): Args {
  const a: Args = { size: 1 << 30, runtime: 10, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--size') {
      const m = /^(\d+)([KMG]?)$/i.exec(v());
      if (!m) throw new Error('--size: use e.g. 1G or 256M');
      a.size = Number(m[1]) * ({ '': 1, k: 1024, m: 1 << 20, g: 1 << 30 } as Record<string, number>)[m[2].toLowerCase()];
    } else if (k === '--runtime') a.runtime = Number(v());
    else if (k === '--only') a.only = new Set(v().split(','));
    else if (k === '--keep') a.keep = true;
    else if (k === '--prof') a.prof = resolve(v());
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

interface Server {
  name: string;
  label: string;
  file: string;
  start(sock: string): ChildProcess;
}

interface Result {
  server: string;
  label: string;
  error?: string;
  seqReadMBs?: number;
  seqReadIops?: number;
  randReadMBs?: number;
  randReadIops?: number;
  seqWriteMBs?: number;
  seqWriteIops?: number;
  nbdcopyMBs?: number;
  /** Every nbdcopy round; nbdcopyMBs is their median. */
  nbdcopyRuns?: number[];
}

const children = new Set<ChildProcess>();

function startProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => { err = (err + c.toString()).slice(-4000); });
  child.on('exit', (code, sig) => {
    children.delete(child);
    if (code && code !== 0) process.stderr.write(`  ${cmd} exited with ${code ?? sig}: ${err.trim().split('\n').slice(-3).join(' | ')}\n`);
  });
  children.add(child);
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10000);
  await exited;
  clearTimeout(t);
}

function killAll(): void {
  for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
}

async function waitForSocket(sock: string, child: ChildProcess, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error('server exited before listening');
    if (existsSync(sock)) {
      const ok = await new Promise<boolean>((res) => {
        const s = connect(sock);
        s.once('connect', () => { s.destroy(); res(true); });
        s.once('error', () => res(false));
      });
      if (ok) return;
    }
    await sleep(100);
  }
  throw new Error(`no server on ${sock} after ${timeoutMs} ms`);
}

async function warm(path: string): Promise<void> {
  await new Promise<void>((res, rej) => {
    const s = createReadStream(path, { highWaterMark: 4 << 20 });
    s.on('data', () => undefined);
    s.on('end', res);
    s.on('error', rej);
  });
}

function parseFio(stdout: string): { read: { bw_bytes: number; iops: number }; write: { bw_bytes: number; iops: number } } {
  const i = stdout.indexOf('{');
  if (i < 0) throw new Error(`fio printed no JSON: ${stdout.slice(0, 200)}`);
  const j = JSON.parse(stdout.slice(i)) as { jobs: Array<{ error: number; read: { bw_bytes: number; iops: number }; write: { bw_bytes: number; iops: number } }> };
  const job = j.jobs[0];
  if (job.error) throw new Error(`fio job error ${job.error}`);
  return job;
}

async function fio(uri: string, rw: string, bs: string, depth: number, runtime: number, size: number): Promise<{ MBs: number; iops: number }> {
  const args = [`--name=${rw}`, '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, `--bs=${bs}`, `--iodepth=${depth}`,
    `--size=${size}`, `--runtime=${runtime}`, '--time_based', '--ramp_time=1', '--output-format=json'];
  const { stdout } = await run('fio', args, { maxBuffer: 16 << 20, timeout: (runtime + 60) * 1000 });
  const job = parseFio(stdout);
  const side = rw.includes('write') ? job.write : job.read;
  return { MBs: side.bw_bytes / 1e6, iops: side.iops };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function nbdcopy(uri: string, size: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  await run('nbdcopy', [uri, 'null:'], { timeout: 300000 });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return size / s / 1e6;
}

async function makeRandomFile(path: string, size: number): Promise<void> {
  const fd = openSync(path, 'w');
  const chunk = Buffer.allocUnsafe(16 << 20);
  try {
    for (let done = 0; done < size; done += chunk.length) {
      const n = Math.min(chunk.length, size - done);
      randomFillSync(chunk, 0, n);
      writeSync(fd, chunk, 0, n);
    }
  } finally {
    closeSync(fd);
  }
}

function fmt(n: number | undefined, digits = 0): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const work = mkdtempSync('/tmp/medv-bench-disk-');
  const cleanup = () => {
    killAll();
    if (!args.keep) rmSync(work, { recursive: true, force: true });
  };
  process.on('SIGINT', () => { cleanup(); process.exit(130); });
  process.on('SIGTERM', () => { cleanup(); process.exit(143); });
  process.on('exit', () => killAll());

  try {
    const raw = join(work, 'data.raw');
    const luks = join(work, 'data.luks');
    const evhd = join(work, 'data.evhd');
    process.stdout.write(`work dir ${work}; ${args.size / 2 ** 20} MiB of random data; fio runtime ${args.runtime}s\n`);
    await makeRandomFile(raw, args.size);
    const want = (n: string) => !args.only || args.only.has(n);
    if (want('qemu-luks') || want('nbdkit-luks')) {
      // qemu calibrates PBKDF2 iterations from CPU time and sometimes fails ("Unable to get accurate
      // CPU usage") on a busy virtual machine: retry, then fall back to the default iter-time.
      for (let attempt = 0; ; attempt++) {
        try {
          await run('qemu-img', ['convert', '-f', 'raw', '-O', 'luks', '--object', `secret,id=sec0,data=${PASS}`,
            '-o', `key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts${attempt < 4 ? ',iter-time=500' : ''}`, raw, luks]);
          break;
        } catch (e) {
          if (attempt >= 5) throw e;
          rmSync(luks, { force: true });
        }
      }
    }
    const medvEnv = { ...process.env, MEDV_PASSPHRASE: PASS };
    let evhdError: string | undefined;
    if (want('medv')) {
      try {
        await run('node', [CLI, 'disk', 'convert', raw, evhd, '--to', 'evhd', '--type', 'dynamic'], { env: medvEnv, timeout: 600000 });
      } catch (e) {
        evhdError = `cannot build the .evhd: ${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}`;
      }
    }
    const nodeArgs = (name: string) => (args.prof ? ['--cpu-prof', `--cpu-prof-dir=${join(args.prof, name)}`] : []);

    const servers: Server[] = [
      { name: 'raw', label: 'qemu-nbd raw', file: raw,
        start: (s) => startProcess('qemu-nbd', ['-t', '-e', '16', '-f', 'raw', '-k', s, raw]) },
      { name: 'qemu-luks', label: 'qemu-nbd LUKS', file: luks,
        start: (s) => startProcess('qemu-nbd', ['-t', '-e', '16', '-k', s, '--object', `secret,id=sec0,data=${PASS}`,
          '--image-opts', `driver=luks,key-secret=sec0,file.filename=${luks}`]) },
      { name: 'nbdkit-luks', label: 'nbdkit LUKS', file: luks,
        // -f: stay in the foreground, as our child (a daemonised nbdkit whose parent exits can die: docs/machines.md).
        start: (s) => startProcess('nbdkit', ['-f', '-U', s, '--filter=luks', 'file', luks, `passphrase=${PASS}`]) },
      { name: 'medv', label: 'medv EVHD', file: evhd,
        start: (s) => startProcess('node', [...nodeArgs('medv'), CLI, 'disk', 'serve', evhd, '--socket', s], medvEnv) },
      { name: 'nbdkit-raw', label: 'nbdkit raw', file: raw,
        start: (s) => startProcess('nbdkit', ['-f', '-U', s, 'file', raw]) },
      { name: 'medv-raw', label: 'medv raw', file: raw,
        start: (s) => startProcess('node', [...nodeArgs('medv-raw'), CLI, 'disk', 'serve', raw, '--socket', s], medvEnv) },
    ];

    // All servers run at once (idle ones cost nothing) and every test visits them in turn, so a
    // change in machine load during the run affects all servers alike rather than one of them.
    const results: Result[] = [];
    const live: Array<{ srv: Server; res: Result; uri: string; child: ChildProcess }> = [];
    for (const f of new Set(servers.filter((s) => want(s.name)).map((s) => s.file))) {
      if (existsSync(f)) await warm(f);
    }
    for (const srv of servers) {
      if (!want(srv.name)) continue;
      const res: Result = { server: srv.name, label: srv.label };
      results.push(res);
      if (srv.name === 'medv' && evhdError) {
        res.error = evhdError;
        process.stdout.write(`${srv.label}: skipped (${evhdError})\n`);
        continue;
      }
      const sock = join(work, `${srv.name}.sock`);
      const child = srv.start(sock);
      try {
        await waitForSocket(sock, child);
        live.push({ srv, res, uri: `nbd+unix:///?socket=${sock}`, child });
      } catch (e) {
        res.error = (e as Error).message;
        process.stdout.write(`${srv.label}: failed to start: ${res.error}\n`);
        await stopProcess(child);
      }
    }
    const tests: Array<[string, (uri: string) => Promise<Partial<Result>>, (r: Partial<Result>) => string]> = [
      ['1 MiB seq read qd8', async (uri) => { const r = await fio(uri, 'read', '1M', 8, args.runtime, args.size); return { seqReadMBs: r.MBs, seqReadIops: r.iops }; },
        (r) => `${fmt(r.seqReadMBs)} MB/s`],
      ['4 KiB rand read qd32', async (uri) => { const r = await fio(uri, 'randread', '4k', 32, args.runtime, args.size); return { randReadMBs: r.MBs, randReadIops: r.iops }; },
        (r) => `${fmt(r.randReadIops)} IOPS`],
      // One nbdcopy pass takes well under a second here: three rounds, each visiting every server in
      // turn, and the median of each server's three (the same rule for every server).
      ...[1, 2, 3].map((round): [string, (uri: string) => Promise<Partial<Result>>, (r: Partial<Result>) => string] =>
        [`nbdcopy to null (round ${round} of 3)`, async (uri) => ({ nbdcopyRuns: [await nbdcopy(uri, args.size)] }),
          (r) => `${fmt(r.nbdcopyRuns?.[0])} MB/s`]),
      ['1 MiB seq write qd8', async (uri) => { const r = await fio(uri, 'write', '1M', 8, args.runtime, args.size); return { seqWriteMBs: r.MBs, seqWriteIops: r.iops }; },
        (r) => `${fmt(r.seqWriteMBs)} MB/s`],
    ];
    for (const [name, test, show] of tests) {
      process.stdout.write(`${name}:`);
      for (const l of live) {
        if (l.res.error) continue;
        try {
          const r = await test(l.uri);
          if (r.nbdcopyRuns) {
            const runs = [...(l.res.nbdcopyRuns ?? []), ...r.nbdcopyRuns];
            Object.assign(l.res, { nbdcopyRuns: runs, nbdcopyMBs: median(runs) });
          } else {
            Object.assign(l.res, r);
          }
          process.stdout.write(` ${l.srv.name} ${show(r)};`);
        } catch (e) {
          l.res.error = (e as { stderr?: string }).stderr?.trim() || (e as Error).message;
          process.stdout.write(` ${l.srv.name} failed;`);
        }
      }
      process.stdout.write('\n');
    }
    for (const l of live) await stopProcess(l.child);

    // Table and ratios.
    const cols: Array<[keyof Result, string, number]> = [
      ['seqReadMBs', 'seq read MB/s', 0], ['randReadIops', 'rand 4k IOPS', 0], ['randReadMBs', 'rand MB/s', 0],
      ['seqWriteMBs', 'seq write MB/s', 0], ['nbdcopyMBs', 'nbdcopy MB/s', 0],
    ];
    const lines: string[] = [];
    const head = ['server'.padEnd(16), ...cols.map(([, h]) => h.padStart(15))].join('');
    lines.push(head, '-'.repeat(head.length));
    for (const r of results) {
      lines.push([r.label.padEnd(16), ...cols.map(([k, , d]) => fmt(r[k] as number | undefined, d).padStart(15))].join('')
        + (r.error ? `  (${r.error.split('\n')[0].slice(0, 60)})` : ''));
    }
    const medv = results.find((r) => r.server === 'medv' && !r.error);
    const ratios: Record<string, Record<string, number>> = {};
    if (medv) {
      lines.push('', 'medv EVHD / peer:');
      for (const peer of results) {
        if (peer === medv || peer.error) continue;
        const row: Record<string, number> = {};
        for (const [k] of cols) {
          const a = medv[k] as number | undefined;
          const b = peer[k] as number | undefined;
          if (a !== undefined && b) row[k] = a / b;
        }
        ratios[peer.server] = row;
        lines.push([`  / ${peer.label}`.padEnd(16), ...cols.map(([k]) => (row[k] === undefined ? '-' : `${row[k].toFixed(2)}x`).padStart(15))].join(''));
      }
    }
    // Our NBD server alone against nbdkit's, both over the same raw file: where the server itself stands.
    const medvRaw = results.find((r) => r.server === 'medv-raw' && !r.error);
    const nbdkitRaw = results.find((r) => r.server === 'nbdkit-raw' && !r.error);
    let serverRatio: Record<string, number> | undefined;
    if (medvRaw && nbdkitRaw) {
      serverRatio = {};
      for (const [k] of cols) {
        const a = medvRaw[k] as number | undefined;
        const b = nbdkitRaw[k] as number | undefined;
        if (a !== undefined && b) serverRatio[k] = a / b;
      }
      const row = serverRatio;
      lines.push('', 'medv raw / nbdkit raw (our NBD server alone):',
        [''.padEnd(16), ...cols.map(([k]) => (row[k] === undefined ? '-' : `${row[k].toFixed(2)}x`).padStart(15))].join(''));
    }
    process.stdout.write(`\n${lines.join('\n')}\n`);
    const outDir = join(ROOT, 'bench/out');
    mkdirSync(outDir, { recursive: true });
    const report = { date: new Date().toISOString(), sizeBytes: args.size, runtimeSeconds: args.runtime, results, ratiosMedvOver: ratios, medvRawOverNbdkitRaw: serverRatio };
    writeFileSync(join(outDir, 'disk.json'), `${JSON.stringify(report, null, 2)}\n`);
    process.stdout.write(`\nwrote ${join(outDir, 'disk.json')}\n`);
  } finally {
    cleanup();
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack ?? e}\n`);
  killAll();
  process.exit(1);
});
