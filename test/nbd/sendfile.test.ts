/**
 * READ replies of a FileDevice's export from the page cache, queued in order with the other replies:
 * large ones sent from its file range (BlockDevice.fileRange, src/nbd/sendfile.ts: sendfile), whole,
 * cut short by a full socket (a piece through Node, then the rest), or from a buffer when the pages
 * are not cached; small ones read at once (readIntoNow) into the connection's output slab, one reply
 * after another.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDevice } from '../../src/block/file.js';
import { FilterDevice } from '../../src/block/filter.js';
import { native } from '../../src/native.js';
import { rangeCached } from '../../src/nbd/sendfile.js';
import { serveNbd, type NbdServer } from '../../src/nbd/server.js';
import * as P from '../helpers/nbd-codec.js';
import { RawClient } from './rawclient.js';

const SIZE = 8 << 20;
/** The addon's sendfile, wrapped by the tests below to count and to cut replies short. */
const realSendFileReply = native.sendFileReply;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Req { type: number; offset: number; length: number; data?: Buffer }

describe('nbd server: READ replies sent from the page cache (FileDevice)', function () {
  this.timeout(20000);
  let dir: string;
  let data: Buffer;
  let dev: FileDevice;
  let server: NbdServer | undefined;
  let clients: RawClient[] = [];
  /** What sendfile did: whole replies, short ones, declined. */
  let calls: { whole: number; short: number; declined: number };
  /** What readIntoNow did. */
  let now: { hits: number; declined: number };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'medv-nbd-sendfile-'));
    data = randomBytes(SIZE);
    writeFileSync(join(dir, 'disk.raw'), data); // just written: in the page cache
    dev = await FileDevice.open(join(dir, 'disk.raw'));
    calls = { whole: 0, short: 0, declined: 0 };
    native.sendFileReply = (sockfd, header, fd, position, length) => {
      const n = realSendFileReply(sockfd, header, fd, position, length);
      if (n < 0) calls.declined++;
      else if (n < header.length + length) calls.short++;
      else calls.whole++;
      return n;
    };
    now = { hits: 0, declined: 0 };
    const realNow = dev.readIntoNow.bind(dev);
    dev.readIntoNow = (buf, offset) => {
      const ok = realNow(buf, offset);
      if (ok) now.hits++;
      else now.declined++;
      return ok;
    };
    server = await serveNbd(dev, { socketPath: join(dir, 'nbd.sock') });
  });
  afterEach(async () => {
    native.sendFileReply = realSendFileReply;
    for (const c of clients) c.destroy();
    clients = [];
    if (server) await server.close();
    server = undefined;
    await dev.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Whether this machine takes the fast path at all (addon, and a kernel with cachestat). */
  const fast = () => native.available && rangeCached(dev, 0, 1 << 20);

  async function open(structured: boolean): Promise<RawClient> {
    const c = await RawClient.open(join(dir, 'nbd.sock'));
    clients.push(c);
    await c.hello();
    if (structured) await c.negotiateStructured();
    await c.go('', [P.NBD_INFO_BLOCK_SIZE], false);
    return c;
  }

  /** Send all requests at once, optionally not reading for a while (the socket fills up), and check every reply. */
  async function run(c: RawClient, structured: boolean, reqs: Req[], stallMs: number, expected: Buffer): Promise<void> {
    if (stallMs) c.sock.pause();
    c.write(Buffer.concat(reqs.flatMap((r, i) => {
      const h = P.encodeRequest({ type: r.type, handle: BigInt(i + 1), offset: r.offset, length: r.length });
      return r.data ? [h, r.data] : [h];
    })));
    if (stallMs) {
      await sleep(stallMs);
      c.sock.resume();
    }
    const seen = new Set<number>();
    for (let k = 0; k < reqs.length; k++) {
      let handle: number;
      let payload: Buffer | undefined;
      // Simple replies for everything but a structured READ; the handle says which request it answers.
      const magic = await c.read(4, 10000);
      if (magic.readUInt32BE(0) === P.NBD_STRUCTURED_REPLY_MAGIC) {
        assert.ok(structured, 'a structured reply to a client that did not ask for them');
        const h = P.decodeStructuredReplyHeader(Buffer.concat([magic, await c.read(P.STRUCTURED_REPLY_HEADER_SIZE - 4)]));
        handle = Number(h.handle);
        assert.equal(h.type, P.NBD_REPLY_TYPE_OFFSET_DATA, `reply type for ${handle}`);
        const body = await c.read(h.length);
        assert.equal(Number(body.readBigUInt64BE(0)), reqs[handle - 1].offset);
        payload = body.subarray(8);
      } else {
        const r = P.decodeSimpleReply(Buffer.concat([magic, await c.read(P.SIMPLE_REPLY_SIZE - 4)]));
        assert.equal(r.error, 0);
        handle = Number(r.handle);
        const q = reqs[handle - 1];
        if (q.type === P.NBD_CMD_READ) payload = await c.read(q.length);
      }
      assert.ok(!seen.has(handle), `handle ${handle} answered twice`);
      seen.add(handle);
      const q = reqs[handle - 1];
      if (q.type === P.NBD_CMD_READ) {
        assert.ok(payload!.equals(expected.subarray(q.offset, q.offset + q.length)), `data of READ ${handle} [${q.offset}, +${q.length})`);
      }
    }
    assert.equal(seen.size, reqs.length);
  }

  for (const structured of [true, false]) {
    it(`answers pipelined large and small READs with the right bytes, also when the client stalls (${structured ? 'structured' : 'simple'} replies)`, async () => {
      const c = await open(structured);
      const reqs: Req[] = [];
      for (let i = 0; i < 60; i++) {
        const length = i % 3 === 0 ? 4096 : (64 << 10) * (1 + (i % 8));
        reqs.push({ type: P.NBD_CMD_READ, offset: ((i * 7919) % 64) * 65536, length });
      }
      await run(c, structured, reqs, 0, data);
      await run(c, structured, reqs, 200, data);
      if (fast()) {
        assert.ok(calls.whole > 0, `no reply was sent whole: ${JSON.stringify(calls)}`);
        assert.ok(calls.short > 0, `the stalled client never filled the socket: ${JSON.stringify(calls)}`);
      }
      assert.equal(server!.heldBytes(), 0);
    });
  }

  for (const structured of [true, false]) {
    it(`answers thousands of pipelined small READs read at once, with the right bytes, also when the client stalls (${structured ? 'structured' : 'simple'} replies)`, async () => {
      const c = await open(structured);
      let seed = 0x9e3779b9;
      const rnd = () => {
        seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
        return seed / 4294967296;
      };
      const sizes = [4096, 4096, 4096, 512, 1, 12288, 65535, 3000];
      const reqs: Req[] = [];
      for (let i = 0; i < 3000; i++) {
        const length = sizes[i % sizes.length];
        reqs.push({ type: P.NBD_CMD_READ, offset: Math.floor(rnd() * (SIZE - length)), length });
      }
      // Stalled: the replies fill the socket and wait in Node while later requests are read into
      // newer slabs; a slab reused too early would show up as wrong bytes.
      await run(c, structured, reqs, 200, data);
      await run(c, structured, reqs.slice(0, 500), 0, data);
      // Declined every third time: those come from the thread pool, in between the others.
      const realNow = dev.readIntoNow;
      let n = 0;
      dev.readIntoNow = (buf, offset) => (n++ % 3 === 0 ? false : realNow(buf, offset));
      await run(c, structured, reqs.slice(0, 1000), 50, data);
      if (native.available) assert.ok(now.hits > 3000, `readIntoNow answered ${now.hits} of ${now.hits + now.declined}`);
      assert.equal(server!.heldBytes(), 0);
    });
  }

  it('a client that sends thousands of small READs and never reads a reply holds at most its allowance; others are served; all is released when it leaves', async function () {
    const budget = 1 << 20;
    const sock = join(dir, 'bounded.sock');
    const bounded = await serveNbd(dev, { socketPath: sock, maxConnectionBytes: budget, maxBlockSize: 64 << 10 });
    try {
      const c = await RawClient.open(sock);
      clients.push(c);
      await c.hello();
      await c.go('', [P.NBD_INFO_BLOCK_SIZE], false);
      c.sock.pause();
      // 20,000 READs of 4 KiB: 80 MiB of replies, none of them read.
      const reqs: Buffer[] = [];
      for (let i = 0; i < 20000; i++) reqs.push(P.encodeRequest({ type: P.NBD_CMD_READ, handle: BigInt(i + 1), offset: (i % 2000) * 4096, length: 4096 }));
      c.write(Buffer.concat(reqs));
      // The server reads requests until the allowance is used, then stops reading.
      const filled = Date.now() + 5000;
      while (bounded.heldBytes() < budget - (128 << 10) && Date.now() < filled) await sleep(20);
      assert.ok(bounded.heldBytes() >= budget - (128 << 10), `the allowance never filled: ${bounded.heldBytes()} bytes held`);
      assert.ok(bounded.heldBytes() <= budget, `${bounded.heldBytes()} bytes held`);
      // Answered: what the allowance and the kernel's socket buffers hold (a few MiB), far from all of it.
      if (native.available) assert.ok(now.hits > 0 && now.hits < 5000, `${now.hits} READs answered for a client that reads nothing`);
      const other = await RawClient.open(sock);
      clients.push(other);
      await other.hello();
      await other.go('', [P.NBD_INFO_BLOCK_SIZE], false);
      await run(other, false, [{ type: P.NBD_CMD_READ, offset: 8192, length: 4096 }], 0, data);
      c.destroy();
      other.destroy();
      const until = Date.now() + 5000;
      while (bounded.heldBytes() !== 0 && Date.now() < until) await sleep(20);
      assert.equal(bounded.heldBytes(), 0);
    } finally {
      await bounded.close();
    }
  });

  it('READs after WRITEs see the written bytes; reads the device declines come from a buffer', async () => {
    const c = await open(true);
    const expected = Buffer.from(data);
    const reqs: Req[] = [];
    for (let i = 0; i < 16; i++) {
      const w = randomBytes(128 << 10);
      const offset = i * (256 << 10);
      w.copy(expected, offset);
      reqs.push({ type: P.NBD_CMD_WRITE, offset, length: w.length, data: w });
    }
    await run(c, true, reqs, 0, expected);
    // Every other reply declined by sendfile (as if its pages had left the cache).
    const counting = native.sendFileReply;
    let n = 0;
    native.sendFileReply = (sockfd, header, fd, position, length) => (n++ % 2 ? -1 : counting(sockfd, header, fd, position, length));
    const reads: Req[] = [];
    for (let i = 0; i < 16; i++) reads.push({ type: P.NBD_CMD_READ, offset: i * (256 << 10), length: 256 << 10 });
    await run(c, true, reads, 100, expected);
    if (fast()) assert.ok(n > 0);
    assert.equal(server!.heldBytes(), 0);
  });

  it('a filter over the file that leaves reads alone is sent from the page cache too; one that changes reads never is', async function () {
    if (!fast()) this.skip();
    class Inverting extends FilterDevice {
      override async read(offset: number, length: number): Promise<Buffer> {
        const b = await this.next.read(offset, length);
        for (let i = 0; i < b.length; i++) b[i] ^= 0xff;
        return b;
      }
    }
    const inverted = Buffer.from(data.map((x) => x ^ 0xff));
    const reads: Req[] = [];
    for (let i = 0; i < 8; i++) reads.push({ type: P.NBD_CMD_READ, offset: i * (512 << 10), length: 256 << 10 });
    for (const [name, filter, expected, sendfile] of [['pass-through', new FilterDevice(dev), data, true], ['inverting', new Inverting(dev), inverted, false]] as const) {
      const sock = join(dir, `${name}.sock`);
      const filtered = await serveNbd(filter, { socketPath: sock });
      try {
        const c = await RawClient.open(sock);
        clients.push(c);
        await c.hello();
        await c.go('', [P.NBD_INFO_BLOCK_SIZE], false);
        const before = calls.whole + calls.short;
        await run(c, false, reads, 0, expected);
        if (sendfile) assert.ok(calls.whole + calls.short > before, `${name}: nothing was sent from the page cache`);
        else assert.equal(calls.whole + calls.short + calls.declined, before, `${name}: the filter was bypassed`);
      } finally {
        await filtered.close();
      }
    }
  });

  it('keeps the device and the replies consistent under pipelined random READ, WRITE, WRITE_ZEROES and FLUSH (seeded)', async () => {
    let seed = 0x2545f491;
    const rnd = () => {
      seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
      return seed / 4294967296;
    };
    const c = await open(true);
    const model = Buffer.from(data);
    const SLOT = SIZE / 16;
    for (let round = 0; round < 40; round++) {
      // One request per slot at most: no two requests of a batch overlap, so the model is exact.
      const reqs: Req[] = [];
      for (let slot = 0; slot < 16; slot++) {
        const pick = rnd();
        if (pick < 0.2) continue;
        const length = rnd() < 0.3 ? (1 + Math.floor(rnd() * 16)) * 512 : (1 + Math.floor(rnd() * 8)) * 65536 - Math.floor(rnd() * 2) * 512;
        const offset = slot * SLOT + Math.floor(rnd() * ((SLOT - length) / 512)) * 512;
        if (pick < 0.6) reqs.push({ type: P.NBD_CMD_READ, offset, length });
        else if (pick < 0.8) reqs.push({ type: P.NBD_CMD_WRITE, offset, length, data: randomBytes(length) });
        else if (pick < 0.95) reqs.push({ type: P.NBD_CMD_WRITE_ZEROES, offset, length });
        else reqs.push({ type: P.NBD_CMD_FLUSH, offset: 0, length: 0 });
      }
      await run(c, true, reqs, rnd() < 0.3 ? 30 : 0, model);
      for (const q of reqs) {
        if (q.type === P.NBD_CMD_WRITE) q.data!.copy(model, q.offset);
        if (q.type === P.NBD_CMD_WRITE_ZEROES) model.fill(0, q.offset, q.offset + q.length);
      }
    }
    await dev.flush();
    assert.ok(readFileSync(join(dir, 'disk.raw')).equals(model), 'the file differs from the model');
    if (fast()) assert.ok(calls.whole > 0, JSON.stringify(calls));
    assert.equal(server!.heldBytes(), 0);
  });

  it('nbdcopy (another process, four connections, reading as we send) gets the exact bytes', async function () {
    if (!['/usr/bin/nbdcopy', '/usr/local/bin/nbdcopy'].some((p) => existsSync(p))) this.skip();
    const out = join(dir, 'out.raw');
    for (let round = 0; round < 4; round++) {
      rmSync(out, { force: true });
      await promisify(execFile)('nbdcopy', ['--request-size=262144', `nbd+unix:///?socket=${join(dir, 'nbd.sock')}`, out]);
      assert.ok(readFileSync(out).equals(data), `round ${round}: the copy differs`);
    }
    if (fast()) assert.ok(calls.whole > 0 && calls.short > 0, JSON.stringify(calls));
  });

  it('a READ cut short whose rest then fails to read ends the connection; others are still served', async function () {
    if (!fast()) this.skip();
    const c = await open(true);
    const counting = native.sendFileReply;
    // Cut every reply short after its header and 1 KiB, and fail the read of the rest.
    native.sendFileReply = (sockfd, header, fd, position, length) => counting(sockfd, header, fd, position, Math.min(length, 1024));
    dev.readInto = async () => { throw new Error('boom'); };
    c.request(P.NBD_CMD_READ, 1n, 0, 128 << 10);
    assert.ok(await c.waitClosed(5000), 'the connection was not closed');
    native.sendFileReply = counting;
    delete (dev as { readInto?: unknown }).readInto;
    const other = await open(true);
    await run(other, true, [{ type: P.NBD_CMD_READ, offset: 0, length: 128 << 10 }], 0, data);
  });
});
