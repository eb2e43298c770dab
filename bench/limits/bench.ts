/**
 * How soon medv refuses hostile input and lets go (not a test: the suite asserts what happens, never
 * how long it takes, so a loaded machine cannot fail it; these figures are the timings the tests
 * once asserted, printed next to the bound they used). Usage: npm run bench:limits [-- --runs N]
 *  1. a .enc whose Argon2id memlimit is 2^40 (checksum valid): refused at parse time (was < 50 ms)
 *  2. EVHD headers with random bytes changed: the slowest parse (was < 30 s for 6,000 and 1,500 opens)
 *  3. .enc files with random bytes changed, unwrapped with a host key: the slowest (was < 2 s each)
 *  4. .vmc files with random bytes changed: the slowest parse (was < 2 s each, < 60 s for 4,500)
 *  5. NBD: a client that stops after the greeting, handshake timeout 200 ms: closed after (was < 2 s)
 *  6. `medv disk serve` with a client that pipelines reads and never reads a reply: SIGTERM to exit
 *     (was < 5 s)
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { MemoryDevice } from '../../src/block/memory.js';
import { DataKey, createHostKey, unwrapDataKey, wrapDataKey, type KekSource } from '../../src/crypto/index.js';
import { EVHD_HEADER_SIZE, parseEvhdHeader } from '../../src/formats/evhd.js';
import { createVmc, parseVmc, serializeVmc } from '../../src/formats/vmc/index.js';
import { createEvhd } from '../../src/layers/evhd/index.js';
import { serveNbd } from '../../src/nbd/server.js';
import { arg } from '../args.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const runs = Number(arg('runs', '2000'));
const work = mkdtempSync(join(tmpdir(), 'medv-bench-limits-'));

const ms = (t0: number) => performance.now() - t0;
const row = (what: string, value: string, was: string) => process.stdout.write(`${what.padEnd(66)} ${value.padStart(10)}   (the tests' old bound: ${was})\n`);

/** `buf` with 1 to 4 random bytes changed. */
function mutated(buf: Buffer): Buffer {
  const m = Buffer.from(buf);
  for (let i = 1 + Math.floor(Math.random() * 4); i > 0; i--) m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
  return m;
}

/** Run `f` on `n` inputs; the slowest and the total, in ms. */
async function slowest(n: number, input: () => Buffer, f: (b: Buffer) => unknown): Promise<{ max: number; total: number }> {
  let max = 0;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const b = input();
    const t = performance.now();
    try { await f(b); } catch { /* refused: what is measured is how long it took */ }
    max = Math.max(max, ms(t));
  }
  return { max, total: ms(t0) };
}

async function main(): Promise<void> {
  process.stdout.write(`medv bench:limits: ${runs} hostile inputs per format\n`);
  const pass: KekSource = { kind: 'passphrase', passphrase: 'x' };
  const key = DataKey.generate();

  // 1. absurd Argon2id parameters in a well-formed .enc
  const cheap = await wrapDataKey(key, pass, { pwhash: { opslimit: 1, memlimit: 8192 } });
  const forged = Buffer.from(cheap);
  forged.writeBigUInt64LE(2n ** 40n, 56);
  createHash('sha256').update(forged.subarray(0, 184)).digest().copy(forged, 184);
  const refuse = await slowest(100, () => forged, (b) => unwrapDataKey(b, pass));
  row('1. .enc with Argon2id memlimit 2^40: refused (slowest of 100)', `${refuse.max.toFixed(2)} ms`, '50 ms');

  // 2. EVHD headers
  const mem = new MemoryDevice(0);
  const dev = await createEvhd(mem, key.clone());
  await dev.write(0, randomBytes(3 * 4096));
  await dev.close();
  const header = mem.snapshot().subarray(0, EVHD_HEADER_SIZE);
  const evhd = await slowest(runs, () => mutated(header), (b) => parseEvhdHeader(b, 'bench.evhd'));
  row(`2. EVHD header, random bytes changed: slowest parse`, `${evhd.max.toFixed(2)} ms`, `30 s for 6,000 (here ${(evhd.total / 1000).toFixed(2)} s for ${runs})`);

  // 3. .enc files unwrapped with a host key
  const hk = join(work, 'host.key');
  await createHostKey(hk);
  const host: KekSource = { kind: 'hostkey', keyFile: hk };
  const enc = await wrapDataKey(key, host);
  const unwrap = await slowest(runs, () => mutated(enc), async (b) => (await unwrapDataKey(b, host, 'bench.enc')).dispose());
  row('3. .enc (host key), random bytes changed: slowest unwrap', `${unwrap.max.toFixed(2)} ms`, '2 s each');

  // 4. .vmc files
  const vmc = serializeVmc(createVmc({ memoryMB: 128, drives: [{ controller: 0, location: 0, kind: 'hard-disk', path: { relative: '.\\a.vhd' } }], network: [{}] }));
  const vmcs = await slowest(runs, () => mutated(vmc), (b) => parseVmc(b, { file: 'bench.vmc' }));
  row('4. .vmc, random bytes changed: slowest parse', `${vmcs.max.toFixed(2)} ms`, `2 s each (here ${(vmcs.total / 1000).toFixed(2)} s for ${runs})`);

  // 5. an NBD client that stops after the greeting
  const sock = join(work, 'nbd.sock');
  const server = await serveNbd(new MemoryDevice(1 << 20), { socketPath: sock, handshakeTimeoutMs: 200 });
  const closedAfter: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await new Promise<void>((done) => {
      const c = connect(sock);
      c.on('data', () => undefined); // reads the greeting, sends nothing
      c.on('close', () => done());
      c.on('error', () => undefined);
    });
    closedAfter.push(ms(t0));
  }
  await server.close();
  row('5. NBD client silent after the greeting (timeout 200 ms): closed', `${Math.max(...closedAfter).toFixed(0)} ms`, '2 s');

  // 6. medv disk serve, SIGTERM with a client that never reads
  const disk = join(work, 'big.raw');
  writeFileSync(disk, randomBytes(1 << 20));
  truncateSync(disk, 1 << 30);
  const serveSock = join(work, 'serve.sock');
  const child = spawn(process.execPath, [join(ROOT, 'bin/medv'), 'disk', 'serve', disk, '--socket', serveSock, '--read-only'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((ready) => child.stdout!.once('data', () => ready()));
  const stuck = connect(serveSock);
  stuck.on('error', () => undefined); // the server cuts it off at exit
  await new Promise<void>((r) => stuck.once('connect', () => r()));
  stuck.write(optGo());
  const reqs: Buffer[] = [];
  for (let i = 0; i < 64; i++) reqs.push(readRequest(i, (i % 30) * 32 << 20, 32 << 20));
  stuck.write(Buffer.concat(reqs));
  stuck.pause(); // never reads a reply
  const exited = new Promise<number | string | null>((r) => child.once('exit', (code, signal) => r(code ?? signal)));
  const t0 = performance.now();
  child.kill('SIGTERM');
  const code = await exited;
  row('6. disk serve, SIGTERM with a client that never reads: exit', `${ms(t0).toFixed(0)} ms`, '5 s');
  stuck.destroy();
  if (code !== 0) process.stdout.write(`   (exit status ${code}: not a clean stop)\n`);
}

/** The client half of a fixed-newstyle handshake straight to transmission: flags, then NBD_OPT_GO of the default export. */
function optGo(): Buffer {
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(3); // FIXED_NEWSTYLE | NO_ZEROES
  const opt = Buffer.alloc(16 + 6);
  opt.write('IHAVEOPT', 0, 'latin1');
  opt.writeUInt32BE(7, 8); // NBD_OPT_GO
  opt.writeUInt32BE(6, 12);
  opt.writeUInt32BE(0, 16); // export name length 0, no info requests
  opt.writeUInt16BE(0, 20);
  return Buffer.concat([flags, opt]);
}

/** An NBD_CMD_READ request. */
function readRequest(handle: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(0x25609513, 0);
  b.writeUInt16BE(0, 4);
  b.writeUInt16BE(0, 6); // NBD_CMD_READ
  b.writeBigUInt64BE(BigInt(handle), 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

main().finally(() => rmSync(work, { recursive: true, force: true })).catch((e) => { process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`); process.exitCode = 1; });
