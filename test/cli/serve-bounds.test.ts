/**
 * `medv disk serve` as a process under hostile clients: its memory stays bounded (VmHWM from
 * /proc/<pid>/status) while other clients are served, and SIGTERM stops it (how soon: bench/limits).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import * as P from '../helpers/nbd-codec.js';
import { RawClient } from '../nbd/rawclient.js';
import { startMedv, tempDir } from '../helpers/cli.js';

const MiB = 1024 * 1024;

/** VmRSS and VmHWM (peak) of a process, in MiB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)![1]);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

/** SIGTERM; resolves with the exit code and the time it took. */
async function terminate(child: ChildProcess, limitMs: number): Promise<{ code: number | null; ms: number }> {
  const t0 = Date.now();
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), limitMs); });
  const code = await Promise.race([exited, late]);
  clearTimeout(timer);
  if (code === 'late') {
    child.kill('SIGKILL');
    await exited;
    return { code: null, ms: Date.now() - t0 };
  }
  return { code, ms: Date.now() - t0 };
}

/** A well-behaved client: `count` reads of 1 MiB, each checked against `expect`. */
async function serveOthers(sock: string, expect: Buffer, count: number): Promise<void> {
  const c = await RawClient.open(sock);
  try {
    await c.go();
    for (let i = 0; i < count; i++) {
      const off = (i % (expect.length / MiB)) * MiB;
      c.request(P.NBD_CMD_READ, BigInt(i), off, MiB);
      const r = await c.reply(() => MiB);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(expect.subarray(off, off + MiB)), `read ${i}`);
    }
  } finally {
    c.destroy();
  }
}

describe('cli: medv disk serve bounds its memory and stops on SIGTERM', function () {
  this.timeout(120_000);
  let dir: ReturnType<typeof tempDir>;
  let disk: string;
  let head: Buffer;
  let sock: string;
  let server: ChildProcess | undefined;

  beforeEach(async () => {
    dir = tempDir('serve-bounds');
    disk = join(dir.path, 'big.raw');
    head = randomBytes(8 * MiB);
    writeFileSync(disk, head);
    truncateSync(disk, 2048 * MiB); // sparse: 2 GiB of mostly holes
    sock = join(dir.path, 's');
    server = await startMedv(['disk', 'serve', disk, '--socket', sock, '--read-only']);
  });
  afterEach(async () => {
    if (server && server.exitCode === null) await terminate(server, 10_000);
    server = undefined;
    await dir.cleanup();
  });

  it('a client pipelining 400 READs of 32 MiB without reading keeps the server under 512 MiB, others are served, SIGTERM stops it cleanly', async () => {
    const pid = server!.pid!;
    const stuck = await RawClient.open(sock);
    await stuck.go();
    stuck.sock.pause(); // never read a reply
    const reqs: Buffer[] = [];
    for (let i = 0; i < 400; i++) {
      reqs.push(P.encodeRequest({ type: P.NBD_CMD_READ, handle: BigInt(i), offset: (i % 60) * 32 * MiB, length: 32 * MiB }));
    }
    stuck.write(Buffer.concat(reqs));
    // While the stuck client's requests sit there, another client reads 64 MiB, checked.
    const t0 = Date.now();
    let maxRss = 0;
    const sampler = setInterval(() => { maxRss = Math.max(maxRss, memory(pid).rss); }, 20);
    try {
      await serveOthers(sock, head, 64);
    } finally {
      clearInterval(sampler);
    }
    const m = memory(pid);
    console.log(`      another client read 64 MiB in ${Date.now() - t0} ms`);
    console.log(`      server RSS ${m.rss.toFixed(0)} MiB, peak ${m.peak.toFixed(0)} MiB (sampled max ${maxRss.toFixed(0)} MiB)`);
    assert.ok(m.peak < 512, `peak RSS ${m.peak.toFixed(0)} MiB`);
    // with the stuck client still connected (how soon: bench/limits)
    const t = await terminate(server!, 60_000);
    assert.equal(t.code, 0, `exit code after SIGTERM (${t.ms} ms)`);
    stuck.destroy();
  });

  it('400 clients each sending half of a 1 MiB option cost the server little; it still serves', async () => {
    const pid = server!.pid!;
    const before = memory(pid).rss;
    const half = Buffer.alloc(512 * 1024, 0x41);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
    const socks = await Promise.all(Array.from({ length: 400 }, () => new Promise<ReturnType<typeof connect>>((res) => {
      const s = connect(sock);
      s.on('error', () => undefined);
      s.once('connect', () => {
        s.write(Buffer.concat([flags, P.encodeOptionHeader(P.NBD_OPT_SET_META_CONTEXT, MiB), half]));
        res(s);
      });
    })));
    // Each either sits in the handshake (at most 16) or was closed at once.
    const closed = await Promise.all(socks.map((s) => new Promise<boolean>((res) => {
      if (s.destroyed) return res(true);
      s.once('close', () => res(true));
      s.once('data', () => undefined);
      setTimeout(() => res(false), 3000);
    })));
    const open = closed.filter((c) => !c).length;
    const m = memory(pid);
    console.log(`      ${open} of 400 connections left open; server RSS ${before.toFixed(0)} -> ${m.rss.toFixed(0)} MiB`);
    assert.ok(open <= 16, `${open} half-finished handshakes kept`);
    assert.ok(m.rss - before < 100, `RSS grew by ${(m.rss - before).toFixed(0)} MiB`);
    for (const s of socks) s.destroy();
    // The slots free up as the server sees those connections close.
    for (let attempt = 0; ; attempt++) {
      try {
        await serveOthers(sock, head, 8);
        break;
      } catch (e) {
        if (attempt >= 50 || !/closed/.test((e as Error).message)) throw e;
      }
    }
    const t = await terminate(server!, 5000);
    assert.equal(t.code, 0);
  });
});
