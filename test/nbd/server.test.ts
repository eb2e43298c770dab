import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice, Extent, WriteOptions } from '../../src/block/device.js';
import { FilterDevice } from '../../src/block/filter.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { MedvError } from '../../src/core/errors.js';
import { serveNbd, type NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import * as P from '../helpers/nbd-codec.js';
import { RawClient } from './rawclient.js';

const SIZE = 4 << 20;
/** Only to slow the instrumented device down (creating concurrency), never to wait for something. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `cond()` holds (checked on every turn of the event loop); rejects after `ms`. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * Error-injection and timing layer over a real device (in the spirit of nbdkit's delay and error
 * filters): records the order of completed operations, can slow writes and fail reads in a range.
 */
class InstrumentedDevice extends FilterDevice {
  events: string[] = [];
  writeDelayMs = 0;
  readDelayMs = 0;
  failReadsAt = -1;
  readsStarted = 0;
  readsSettled = 0;
  /** Optional allocation map (BlockDevice.extents); absent = all data. */
  map?: Extent[];
  private waiters: Array<{ cond: () => boolean; resolve: () => void }> = [];
  override get description() { return `instrumented ${this.next.description}`; }
  /** Resolves when `cond()` holds after some device event (read started or settled). */
  when(cond: () => boolean): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ cond, resolve }));
  }
  private notify(): void {
    this.waiters = this.waiters.filter((w) => (w.cond() ? (w.resolve(), false) : true));
  }
  override async read(offset: number, length: number): Promise<Buffer> {
    this.readsStarted++;
    this.notify();
    try {
      if (this.readDelayMs) await sleep(this.readDelayMs);
      if (this.failReadsAt >= offset && this.failReadsAt < offset + length) {
        throw new MedvError('EIO', 'injected read error', { file: this.description, offset: this.failReadsAt });
      }
      return await super.read(offset, length);
    } finally {
      this.readsSettled++;
      this.notify();
    }
  }
  override async extents(offset: number, length: number): Promise<Extent[]> {
    if (!this.map) return super.extents(offset, length);
    const out: Extent[] = [];
    let at = 0;
    for (const e of this.map) {
      const a = Math.max(at, offset);
      const z = Math.min(at + e.length, offset + length);
      if (z > a) out.push({ ...e, length: z - a });
      at += e.length;
    }
    return out;
  }
  override async write(offset: number, data: Buffer, options?: WriteOptions): Promise<void> {
    if (this.writeDelayMs) await sleep(this.writeDelayMs);
    await super.write(offset, data, options);
    this.events.push(`write ${offset}${options?.fua ? ' fua' : ''}`);
  }
  override async flush(): Promise<void> { await super.flush(); this.events.push('flush'); }
  override async discard(offset: number, length: number): Promise<void> { await super.discard(offset, length); this.events.push(`discard ${offset}`); }
  override async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await super.writeZeroes(offset, length, options);
    this.events.push(`zero ${offset}`);
  }
}

describe('nbd server (raw protocol)', function () {
  let dir: string;
  let sock: string;
  let mem: MemoryDevice;
  let dev: InstrumentedDevice;
  let server: NbdServer | undefined;
  let clients: RawClient[] = [];

  async function start(opts: Partial<NbdServerOptions> = {}, device: BlockDevice = dev): Promise<NbdServer> {
    server = await serveNbd(device, { socketPath: sock, ...opts });
    return server;
  }
  async function client(): Promise<RawClient> {
    const c = await RawClient.open(sock);
    clients.push(c);
    return c;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'medv-nbd-'));
    sock = join(dir, 'nbd.sock');
    mem = MemoryDevice.from(randomBytes(SIZE));
    dev = new InstrumentedDevice(mem);
  });
  afterEach(async () => {
    for (const c of clients) c.destroy();
    clients = [];
    if (server) await server.close();
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  describe('handshake', () => {
    it('negotiates with OPT_GO and reports size, flags and block sizes', async () => {
      await start({ description: 'test disk', exportName: 'disk0' });
      assert.equal(statSync(sock).mode & 0o777, 0o600);
      const c = await client();
      const infos = await c.go('disk0', [P.NBD_INFO_NAME, P.NBD_INFO_DESCRIPTION, P.NBD_INFO_BLOCK_SIZE]);
      const exp = infos.find((i) => i.type === P.NBD_INFO_EXPORT) as { size: number; flags: number };
      assert.equal(exp.size, SIZE);
      const want = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_TRIM
        | P.NBD_FLAG_SEND_WRITE_ZEROES | P.NBD_FLAG_CAN_MULTI_CONN;
      assert.equal(exp.flags, want);
      assert.deepEqual(infos.find((i) => i.type === P.NBD_INFO_NAME), { type: P.NBD_INFO_NAME, name: 'disk0' });
      assert.deepEqual(infos.find((i) => i.type === P.NBD_INFO_DESCRIPTION), { type: P.NBD_INFO_DESCRIPTION, description: 'test disk' });
      assert.deepEqual(infos.find((i) => i.type === P.NBD_INFO_BLOCK_SIZE),
        { type: P.NBD_INFO_BLOCK_SIZE, minimum: 4096, preferred: 4096, maximum: 32 << 20 });
      assert.equal(server!.connections(), 1);
    });

    it('answers unknown options with ERR_UNSUP, meta contexts before STRUCTURED_REPLY with ERR_INVALID, and continues', async () => {
      await start();
      const c = await client();
      const g = await c.hello();
      assert.equal(g.handshakeFlags, P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
      for (const opt of [P.NBD_OPT_STARTTLS, P.NBD_OPT_EXTENDED_HEADERS, 12345]) {
        const [r] = await c.option(opt);
        assert.equal(r.type, P.NBD_REP_ERR_UNSUP, `option ${opt}`);
        assert.equal(r.option, opt);
      }
      const query = P.encodeMetaContextRequest({ name: '', queries: [P.BASE_ALLOCATION] });
      for (const opt of [P.NBD_OPT_SET_META_CONTEXT, P.NBD_OPT_LIST_META_CONTEXT]) {
        const [r] = await c.option(opt, query);
        assert.equal(r.type, P.NBD_REP_ERR_INVALID, `option ${opt} before STRUCTURED_REPLY`);
      }
      const list = await c.option(P.NBD_OPT_LIST);
      assert.deepEqual(list.map((r) => r.type), [P.NBD_REP_SERVER, P.NBD_REP_ACK]);
      const bad = await c.option(P.NBD_OPT_LIST, Buffer.from('x'));
      assert.equal(bad[0].type, P.NBD_REP_ERR_INVALID);
      const info = await c.option(P.NBD_OPT_INFO, P.encodeInfoRequest({ name: '', requests: [] }));
      assert.deepEqual(info.map((r) => r.type), [P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_ACK]);
      const malformed = await c.option(P.NBD_OPT_GO, Buffer.from([0, 0, 0, 9, 1]));
      assert.equal(malformed[0].type, P.NBD_REP_ERR_INVALID);
      const go = await c.option(P.NBD_OPT_GO, P.encodeInfoRequest({ name: '', requests: [] }));
      assert.equal(go[go.length - 1].type, P.NBD_REP_ACK);
      c.request(P.NBD_CMD_READ, 7n, 8192, 4096);
      const r = await c.reply(() => 4096);
      assert.equal(r.error, 0);
      assert.ok(r.data.equals(mem.snapshot().subarray(8192, 12288)));
    });

    it('refuses an unknown export name with ERR_UNKNOWN but accepts the right one', async () => {
      await start({ exportName: 'disk0' });
      const c = await client();
      await c.hello();
      const [r] = await c.option(P.NBD_OPT_GO, P.encodeInfoRequest({ name: 'other', requests: [] }));
      assert.equal(r.type, P.NBD_REP_ERR_UNKNOWN);
      const ok = await c.option(P.NBD_OPT_GO, P.encodeInfoRequest({ name: 'disk0', requests: [] }));
      assert.equal(ok[ok.length - 1].type, P.NBD_REP_ACK);
    });

    it('supports NBD_OPT_EXPORT_NAME with and without NO_ZEROES', async () => {
      await start({ readOnly: true });
      const a = await client();
      await a.hello(P.NBD_FLAG_C_FIXED_NEWSTYLE);
      a.write(P.encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('anything')));
      const reply = await a.read(134);
      assert.equal(reply.readBigUInt64BE(0), BigInt(SIZE));
      assert.equal(reply.readUInt16BE(8) & P.NBD_FLAG_READ_ONLY, P.NBD_FLAG_READ_ONLY);
      assert.ok(reply.subarray(10).equals(Buffer.alloc(124)));
      a.request(P.NBD_CMD_READ, 1n, 0, 4096);
      assert.ok((await a.reply(() => 4096)).data.equals(mem.snapshot().subarray(0, 4096)));

      const b = await client();
      await b.hello();
      b.write(P.encodeOption(P.NBD_OPT_EXPORT_NAME));
      assert.equal((await b.read(10)).readBigUInt64BE(0), BigInt(SIZE));
      b.request(P.NBD_CMD_READ, 2n, 4096, 4096);
      const r = await b.reply(() => 4096);
      assert.equal(r.handle, 2n);
    });

    it('ends the session on OPT_ABORT, EXPORT_NAME of an unknown export, bad magic or unknown client flags', async () => {
      await start({ exportName: 'disk0' });
      const abort = await client();
      await abort.hello();
      const [ack] = await abort.option(P.NBD_OPT_ABORT);
      assert.equal(ack.type, P.NBD_REP_ACK);
      assert.ok(await abort.waitClosed());

      const unknown = await client();
      await unknown.hello();
      unknown.write(P.encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('nope')));
      assert.ok(await unknown.waitClosed());

      const magic = await client();
      await magic.hello();
      const opt = P.encodeOption(P.NBD_OPT_LIST);
      opt[0] = 0x58;
      magic.write(opt);
      assert.ok(await magic.waitClosed());

      const flags = await client();
      await flags.hello(0x80);
      assert.ok(await flags.waitClosed());

      const huge = await client();
      await huge.hello();
      huge.write(P.encodeOptionHeader(P.NBD_OPT_SET_META_CONTEXT, 0xffffffff));
      assert.ok(await huge.waitClosed());

      // The server is still there.
      const ok = await client();
      await ok.go('disk0');
    });
  });

  describe('transmission', () => {
    async function ready(opts: Partial<NbdServerOptions> = {}): Promise<RawClient> {
      if (!server) await start(opts);
      const c = await client();
      await c.go();
      return c;
    }

    it('reads and writes, and replies EINVAL/ENOSPC out of range while the connection keeps working', async () => {
      const c = await ready();
      const data = randomBytes(65536);
      c.request(P.NBD_CMD_WRITE, 1n, 4096, data.length, data);
      assert.deepEqual(await c.reply(), { error: 0, handle: 1n, data: Buffer.alloc(0) });
      assert.ok(mem.snapshot().subarray(4096, 4096 + 65536).equals(data));

      c.request(P.NBD_CMD_READ, 2n, SIZE - 4096, 8192);
      assert.equal((await c.reply()).error, P.NBD_EINVAL);
      c.request(P.NBD_CMD_READ, 3n, 2 ** 62, 4096);
      assert.equal((await c.reply()).error, P.NBD_EINVAL);
      c.request(P.NBD_CMD_WRITE, 4n, SIZE, 4096, Buffer.alloc(4096));
      assert.equal((await c.reply()).error, P.NBD_ENOSPC);
      c.request(P.NBD_CMD_TRIM, 5n, SIZE - 4096, 8192);
      assert.equal((await c.reply()).error, P.NBD_ENOSPC);

      c.request(P.NBD_CMD_READ, 6n, 4096, 65536);
      const r = await c.reply(() => 65536);
      assert.equal(r.handle, 6n);
      assert.ok(r.data.equals(data));
      assert.equal(mem.size, SIZE, 'a resizable device is not grown by writes past the export');
    });

    it('refuses oversize requests with EINVAL, skipping an oversize payload', async () => {
      const c = await ready({ maxBlockSize: 1 << 20 });
      c.request(P.NBD_CMD_READ, 1n, 0, (1 << 20) + 4096);
      assert.equal((await c.reply()).error, P.NBD_EINVAL);
      const big = Buffer.alloc((1 << 20) + 4096, 0x5a);
      const before = mem.snapshot();
      c.request(P.NBD_CMD_WRITE, 2n, 0, big.length, big);
      c.request(P.NBD_CMD_READ, 3n, 0, 4096);
      const r1 = await c.reply(() => 4096);
      const r2 = await c.reply(() => 4096);
      const byHandle = new Map([[r1.handle, r1], [r2.handle, r2]]);
      assert.equal(byHandle.get(2n)!.error, P.NBD_EINVAL);
      assert.ok(byHandle.get(3n)!.data.equals(before.subarray(0, 4096)));
      assert.ok(mem.snapshot().equals(before));
    });

    it('replies EINVAL to unknown commands and flags and keeps going', async () => {
      const c = await ready();
      c.request(P.NBD_CMD_BLOCK_STATUS, 1n, 0, 4096);
      c.request(P.NBD_CMD_CACHE, 2n, 0, 4096);
      c.request(99, 3n, 0, 0);
      c.request(P.NBD_CMD_READ, 4n, 0, 4096, undefined, P.NBD_CMD_FLAG_DF);
      c.request(P.NBD_CMD_WRITE, 5n, 0, 4096, Buffer.alloc(4096), P.NBD_CMD_FLAG_NO_HOLE);
      for (let i = 0; i < 5; i++) assert.equal((await c.reply()).error, P.NBD_EINVAL);
      c.request(P.NBD_CMD_READ, 6n, 0, 4096);
      assert.equal((await c.reply(() => 4096)).error, 0);
    });

    it('refuses writes on a read-only export with EPERM and leaves the device unchanged', async () => {
      const c = await ready({ readOnly: true });
      const before = mem.snapshot();
      c.request(P.NBD_CMD_WRITE, 1n, 0, 4096, Buffer.alloc(4096, 1));
      c.request(P.NBD_CMD_TRIM, 2n, 0, 4096);
      c.request(P.NBD_CMD_WRITE_ZEROES, 3n, 0, 4096);
      for (let i = 0; i < 3; i++) assert.equal((await c.reply()).error, P.NBD_EPERM);
      c.request(P.NBD_CMD_FLUSH, 4n, 0, 0);
      assert.equal((await c.reply()).error, 0);
      assert.ok(mem.snapshot().equals(before));
    });

    it('exports a read-only device read-only', async () => {
      await start({}, MemoryDevice.from(Buffer.alloc(1 << 20), true));
      const c = await client();
      const infos = await c.go();
      const exp = infos.find((i) => i.type === P.NBD_INFO_EXPORT) as { flags: number };
      assert.equal(exp.flags & P.NBD_FLAG_READ_ONLY, P.NBD_FLAG_READ_ONLY);
      assert.equal(exp.flags & P.NBD_FLAG_SEND_TRIM, 0);
      c.request(P.NBD_CMD_WRITE, 1n, 0, 4096, Buffer.alloc(4096, 1));
      assert.equal((await c.reply()).error, P.NBD_EPERM);
    });

    it('answers 64 concurrent requests with the right handles and data', async () => {
      dev.readDelayMs = 2;
      const c = await ready();
      const expected = mem.snapshot();
      const reqs = new Map<bigint, { offset: number; length: number; write: boolean }>();
      const batches: Buffer[] = [];
      for (let i = 0; i < 64; i++) {
        const handle = 0x1000000000n + BigInt(i) * 0x100000001n;
        const write = i % 4 === 3;
        const length = 4096 * ((i % 5) + 1);
        const offset = write ? SIZE - (1 << 20) + i * 16384 : ((i * 37) % 512) * 4096;
        batches.push(P.encodeRequest({ type: write ? P.NBD_CMD_WRITE : P.NBD_CMD_READ, handle, offset, length }));
        if (write) {
          const data = randomBytes(length);
          data.copy(expected, offset);
          batches.push(data);
        }
        reqs.set(handle, { offset, length, write });
      }
      c.write(Buffer.concat(batches));
      const seen = new Set<bigint>();
      for (let i = 0; i < 64; i++) {
        const r = await c.reply((h) => (reqs.get(h)?.write === false ? reqs.get(h)!.length : 0));
        assert.equal(r.error, 0);
        const q = reqs.get(r.handle);
        assert.ok(q, `unexpected handle ${r.handle}`);
        assert.ok(!seen.has(r.handle), `handle ${r.handle} answered twice`);
        seen.add(r.handle);
        if (!q.write) assert.ok(r.data.equals(expected.subarray(q.offset, q.offset + q.length)), `data for ${r.handle}`);
      }
      assert.equal(seen.size, 64);
      assert.ok(mem.snapshot().equals(expected));
    });

    it('lands many large writes spanning socket chunks intact (pooled payload buffers)', async () => {
      dev.writeDelayMs = 1;
      const c = await ready();
      const expected = mem.snapshot();
      const out: Buffer[] = [];
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 12; i++) {
          const data = randomBytes(256 * 1024);
          const offset = ((i * 5 + round * 3) % 16) * 256 * 1024;
          data.copy(expected, offset);
          out.push(P.encodeRequest({ type: P.NBD_CMD_WRITE, handle: BigInt(round * 100 + i), offset, length: data.length }), data);
        }
      }
      // Writes to the same range are sent in order but may complete in any order: serialise rounds.
      for (let round = 0; round < 3; round++) {
        c.write(Buffer.concat(out.slice(round * 24, round * 24 + 24)));
        for (let i = 0; i < 12; i++) assert.equal((await c.reply()).error, 0);
      }
      assert.ok(mem.snapshot().equals(expected));
    });

    it('answers FLUSH only after the writes sent before it, and flushes after them', async () => {
      dev.writeDelayMs = 30;
      const c = await ready();
      const out: Buffer[] = [];
      for (let i = 0; i < 8; i++) out.push(P.encodeRequest({ type: P.NBD_CMD_WRITE, handle: BigInt(i + 1), offset: i * 4096, length: 4096 }), Buffer.alloc(4096, i));
      out.push(P.encodeRequest({ type: P.NBD_CMD_FLUSH, handle: 100n, offset: 0, length: 0 }));
      c.write(Buffer.concat(out));
      const order: bigint[] = [];
      for (let i = 0; i < 9; i++) {
        const r = await c.reply();
        assert.equal(r.error, 0);
        order.push(r.handle);
      }
      assert.equal(order[8], 100n, `flush answered before writes: ${order.join(',')}`);
      assert.equal(dev.events.indexOf('flush'), 8, dev.events.join(','));
    });

    it('honours FUA, TRIM and WRITE_ZEROES', async () => {
      const c = await ready();
      c.request(P.NBD_CMD_WRITE, 1n, 0, 4096, Buffer.alloc(4096, 7), P.NBD_CMD_FLAG_FUA);
      assert.equal((await c.reply()).error, 0);
      assert.ok(dev.events.includes('write 0 fua'));
      c.request(P.NBD_CMD_WRITE_ZEROES, 2n, 8192, 8192, undefined, P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FUA);
      assert.equal((await c.reply()).error, 0);
      assert.ok(mem.snapshot().subarray(8192, 16384).equals(Buffer.alloc(8192)));
      c.request(P.NBD_CMD_TRIM, 3n, 65536, 65536);
      assert.equal((await c.reply()).error, 0);
      assert.ok(dev.events.includes('discard 65536'));
    });

    it('maps device errors to NBD errno (EIO) and keeps serving', async () => {
      dev.failReadsAt = 12288;
      const c = await ready();
      c.request(P.NBD_CMD_READ, 1n, 8192, 8192);
      assert.equal((await c.reply()).error, P.NBD_EIO);
      c.request(P.NBD_CMD_READ, 2n, 0, 4096);
      assert.equal((await c.reply(() => 4096)).error, 0);
    });

    it('survives a client that disconnects mid-write or with requests in flight', async () => {
      dev.readDelayMs = 20;
      const c = await ready();
      const before = mem.snapshot();
      c.write(Buffer.concat([P.encodeRequest({ type: P.NBD_CMD_READ, handle: 1n, offset: 0, length: 1 << 20 }),
        P.encodeRequest({ type: P.NBD_CMD_WRITE, handle: 2n, offset: 0, length: 65536 }), Buffer.alloc(30000, 9)]));
      await dev.when(() => dev.readsStarted === 1); // the server has the requests
      c.destroy();
      await until(() => server!.connections() === 0, 'the connection to close');
      await dev.when(() => dev.readsSettled === 1);
      assert.ok(mem.snapshot().equals(before), 'a partial write must not reach the device');
      assert.equal(server!.heldBytes(), 0, 'a closed connection holds nothing');
      const d = await client();
      await d.go();
      d.request(P.NBD_CMD_READ, 3n, 0, 4096);
      assert.ok((await d.reply(() => 4096)).data.equals(before.subarray(0, 4096)));
    });

    it('handles DISC after answering in-flight requests, and a client half-close', async () => {
      dev.writeDelayMs = 20;
      const c = await ready();
      c.write(Buffer.concat([P.encodeRequest({ type: P.NBD_CMD_WRITE, handle: 1n, offset: 0, length: 4096 }), Buffer.alloc(4096, 3),
        P.encodeRequest({ type: P.NBD_CMD_DISC, handle: 2n, offset: 0, length: 0 })]));
      assert.deepEqual(await c.reply(), { error: 0, handle: 1n, data: Buffer.alloc(0) });
      assert.ok(await c.waitClosed());

      const h = await client();
      await h.go();
      h.request(P.NBD_CMD_WRITE, 5n, 4096, 4096, Buffer.alloc(4096, 4));
      h.sock.end();
      assert.equal((await h.reply()).handle, 5n);
      assert.ok(await h.waitClosed());
      assert.ok(mem.snapshot().subarray(4096, 8192).equals(Buffer.alloc(4096, 4)));
    });

    it('answers every request a half-closing client sent, even beyond the in-flight limit', async () => {
      dev.readDelayMs = 5;
      const c = await ready({ maxInFlight: 2 });
      const reqs: Buffer[] = [];
      for (let i = 0; i < 10; i++) reqs.push(P.encodeRequest({ type: P.NBD_CMD_READ, handle: BigInt(i), offset: i * 4096, length: 4096 }));
      c.sock.end(Buffer.concat(reqs));
      const seen = new Set<bigint>();
      for (let i = 0; i < 10; i++) {
        const r = await c.reply(() => 4096);
        assert.equal(r.error, 0);
        seen.add(r.handle);
      }
      assert.equal(seen.size, 10);
      assert.ok(await c.waitClosed());
    });

    it('serves several connections at once', async () => {
      const a = await ready();
      const b = await client();
      await b.go();
      a.request(P.NBD_CMD_WRITE, 1n, 0, 4096, Buffer.alloc(4096, 0xee));
      await a.reply();
      b.request(P.NBD_CMD_READ, 1n, 0, 4096);
      assert.ok((await b.reply(() => 4096)).data.equals(Buffer.alloc(4096, 0xee)));
      assert.equal(server!.connections(), 2);
    });
  });

  describe('structured replies and base:allocation', () => {
    async function structured(opts: Partial<NbdServerOptions> = {}): Promise<{ c: RawClient; ctx: number; flags: number }> {
      if (!server) await start(opts);
      const c = await client();
      await c.hello();
      const ctx = await c.negotiateStructured();
      const infos = await c.go('', [P.NBD_INFO_BLOCK_SIZE], false);
      const exp = infos.find((i) => i.type === P.NBD_INFO_EXPORT) as { flags: number };
      return { c, ctx, flags: exp.flags };
    }
    function descriptors(payload: Buffer): Array<[number, number]> {
      const out: Array<[number, number]> = [];
      for (let at = 4; at < payload.length; at += 8) out.push([payload.readUInt32BE(at), payload.readUInt32BE(at + 4)]);
      return out;
    }

    it('lists and selects base:allocation only after STRUCTURED_REPLY, as QEMU asks', async () => {
      await start();
      const c = await client();
      await c.hello();
      const [ack] = await c.option(P.NBD_OPT_STRUCTURED_REPLY);
      assert.equal(ack.type, P.NBD_REP_ACK);
      const [bad] = await c.option(P.NBD_OPT_STRUCTURED_REPLY, Buffer.from('x'));
      assert.equal(bad.type, P.NBD_REP_ERR_INVALID);
      const list = (queries: string[]) => c.option(P.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest({ name: '', queries }));
      for (const q of [[], ['base:'], [P.BASE_ALLOCATION]]) {
        const r = await list(q);
        assert.deepEqual(r.map((x) => x.type), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK], JSON.stringify(q));
        assert.deepEqual(P.decodeRepMetaContext(r[0].data), { id: 0, name: P.BASE_ALLOCATION });
      }
      assert.deepEqual((await list(['qemu:dirty-bitmap:x'])).map((x) => x.type), [P.NBD_REP_ACK]);
      const [garbled] = await c.option(P.NBD_OPT_SET_META_CONTEXT, Buffer.from([0, 0, 0, 0, 0, 0, 0, 9, 0, 0]));
      assert.equal(garbled.type, P.NBD_REP_ERR_INVALID);
      const set = await c.option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest({ name: '', queries: ['x-nope:a', P.BASE_ALLOCATION] }));
      assert.deepEqual(set.map((x) => x.type), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
      assert.equal(P.decodeRepMetaContext(set[0].data).name, P.BASE_ALLOCATION);
    });

    it('answers READ with one OFFSET_DATA chunk, errors with an ERROR chunk, other commands with simple replies', async () => {
      const { c, flags } = await structured();
      assert.equal(flags & P.NBD_FLAG_SEND_DF, P.NBD_FLAG_SEND_DF);
      c.request(P.NBD_CMD_READ, 1n, 8192, 16384, undefined, P.NBD_CMD_FLAG_DF);
      const r = await c.chunk();
      assert.equal(r.handle, 1n);
      assert.equal(r.type, P.NBD_REPLY_TYPE_OFFSET_DATA);
      assert.equal(r.flags, P.NBD_REPLY_FLAG_DONE);
      assert.equal(Number(r.payload.readBigUInt64BE(0)), 8192);
      assert.ok(r.payload.subarray(8).equals(mem.snapshot().subarray(8192, 8192 + 16384)));
      c.request(P.NBD_CMD_READ, 2n, SIZE - 4096, 8192);
      const e = await c.chunk();
      assert.equal(e.type, P.NBD_REPLY_TYPE_ERROR);
      assert.equal(e.flags, P.NBD_REPLY_FLAG_DONE);
      assert.equal(e.payload.readUInt32BE(0), P.NBD_EINVAL);
      assert.equal(e.payload.readUInt16BE(4), e.payload.length - 6, 'message length');
      dev.failReadsAt = 0;
      c.request(P.NBD_CMD_READ, 3n, 0, 4096);
      assert.equal((await c.chunk()).payload.readUInt32BE(0), P.NBD_EIO);
      c.request(P.NBD_CMD_WRITE, 4n, 0, 4096, Buffer.alloc(4096, 5));
      assert.deepEqual(await c.reply(), { error: 0, handle: 4n, data: Buffer.alloc(0) });
    });

    it('answers BLOCK_STATUS from the device extents, aligned to the minimum block size', async () => {
      // 8 KiB data, 4 KiB hole+zero, 512 B zero then 3.5 KiB hole+zero (one 4 KiB block: zero only),
      // 8 KiB hole, then data to the end.
      dev.map = [
        { length: 8192, hole: false, zero: false },
        { length: 4096, hole: true, zero: true },
        { length: 512, hole: false, zero: true },
        { length: 3584, hole: true, zero: true },
        { length: 8192, hole: true, zero: false },
        { length: SIZE - 24576, hole: false, zero: false },
      ];
      const { c, ctx } = await structured();
      assert.ok(ctx > 0);
      c.request(P.NBD_CMD_BLOCK_STATUS, 1n, 0, SIZE);
      const r = await c.chunk();
      assert.equal(r.type, P.NBD_REPLY_TYPE_BLOCK_STATUS);
      assert.equal(r.flags, P.NBD_REPLY_FLAG_DONE);
      assert.equal(r.payload.readUInt32BE(0), ctx);
      const HZ = P.NBD_STATE_HOLE | P.NBD_STATE_ZERO;
      assert.deepEqual(descriptors(r.payload), [[8192, 0], [4096, HZ], [4096, P.NBD_STATE_ZERO], [8192, P.NBD_STATE_HOLE], [SIZE - 24576, 0]]);
      c.request(P.NBD_CMD_BLOCK_STATUS, 2n, 8192, 65536, undefined, P.NBD_CMD_FLAG_REQ_ONE);
      assert.deepEqual(descriptors((await c.chunk()).payload), [[4096, HZ]]);
      c.request(P.NBD_CMD_BLOCK_STATUS, 3n, SIZE - 4096, 8192);
      const past = await c.chunk();
      assert.equal(past.type, P.NBD_REPLY_TYPE_ERROR);
      assert.equal(past.payload.readUInt32BE(0), P.NBD_EINVAL);
      c.request(P.NBD_CMD_BLOCK_STATUS, 4n, 0, 0);
      assert.equal((await c.chunk()).payload.readUInt32BE(0), P.NBD_EINVAL);
    });

    it('refuses BLOCK_STATUS when no context was selected, and a device without extents is all data', async () => {
      await start();
      const c = await client();
      await c.hello();
      assert.equal(await c.negotiateStructured(['x-other:thing']), 0);
      await c.go('', [], false);
      c.request(P.NBD_CMD_BLOCK_STATUS, 1n, 0, 4096);
      const r = await c.chunk();
      assert.equal(r.type, P.NBD_REPLY_TYPE_ERROR);
      assert.equal(r.payload.readUInt32BE(0), P.NBD_EINVAL);
      const { c: d, ctx } = await structured();
      d.request(P.NBD_CMD_BLOCK_STATUS, 2n, 4096, 1 << 20);
      const s2 = await d.chunk();
      assert.equal(s2.payload.readUInt32BE(0), ctx);
      assert.deepEqual(descriptors(s2.payload), [[1 << 20, 0]]);
    });
  });

  describe('bounds', () => {
    it('holds at most maxConnectionBytes for a client that never reads its replies, and releases all when it leaves', async () => {
      const budget = 8 << 20;
      await start({ maxConnectionBytes: budget, maxBlockSize: 1 << 20 });
      const c = await client();
      await c.go();
      c.sock.pause();
      const reqs: Buffer[] = [];
      for (let i = 0; i < 200; i++) reqs.push(P.encodeRequest({ type: P.NBD_CMD_READ, handle: BigInt(i), offset: 0, length: 1 << 20 }));
      c.write(Buffer.concat(reqs));
      // The server reads requests until the allowance is used, then stops.
      await until(() => server!.heldBytes() >= budget - (2 << 20), 'the allowance to fill up');
      const started = dev.readsStarted;
      assert.ok(started < 20, `${started} reads of 1 MiB started for a client that reads nothing`);
      assert.ok(server!.heldBytes() <= budget, `${server!.heldBytes()} bytes held`);
      // Another client is served meanwhile.
      const other = await client();
      await other.go();
      other.request(P.NBD_CMD_READ, 1n, 4096, 4096);
      assert.ok((await other.reply(() => 4096)).data.equals(mem.snapshot().subarray(4096, 8192)));
      c.destroy();
      await until(() => server!.connections() === 1, 'the stuck connection to close');
      assert.equal(server!.heldBytes(), 0);
    });

    it('closes a client that does not finish the handshake in time', async () => {
      await start({ handshakeTimeoutMs: 200 });
      const c = await client();
      await c.hello();
      // closed by the server, not by the test (how soon after the 200 ms: bench/limits)
      assert.ok(await c.waitClosed(60_000), 'closed by the server');
      const ok = await client();
      await ok.go();
      ok.request(P.NBD_CMD_READ, 1n, 0, 4096);
      assert.equal((await ok.reply(() => 4096)).error, 0);
    });

    it('closes connections beyond maxHandshakes at once, and accepts again once one reached transmission', async () => {
      await start({ maxHandshakes: 3 });
      const waiting = [await client(), await client(), await client()];
      for (const w of waiting) await w.read(P.GREETING_SIZE); // each has its greeting: all three are in the handshake
      const extra = await client();
      assert.ok(await extra.waitClosed(), 'a fourth handshake is refused');
      const wf = Buffer.alloc(4);
      wf.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
      waiting[0].write(wf);
      const go = await waiting[0].option(P.NBD_OPT_GO, P.encodeInfoRequest({ name: '', requests: [] }));
      assert.equal(go[go.length - 1].type, P.NBD_REP_ACK);
      const next = await client();
      await next.go();
    });
  });

  describe('lifecycle', () => {
    it('close() ends connections after in-flight requests, removes the socket, leaves the device open', async () => {
      dev.readDelayMs = 50;
      await start();
      const c = await client();
      await c.go();
      c.request(P.NBD_CMD_READ, 1n, 0, 4096);
      await dev.when(() => dev.readsStarted === 1);
      const hs = await client(); // still in the handshake: dropped
      await server!.close();
      server = undefined;
      const r = await c.reply(() => 4096);
      assert.equal(r.error, 0);
      assert.ok(await c.waitClosed());
      assert.ok(await hs.waitClosed());
      assert.ok(!existsSync(sock));
      assert.equal((await dev.read(0, 16)).length, 16);
    });

    it('replaces a stale socket file and refuses a live one or a regular file', async () => {
      const first = await serveNbd(dev, { socketPath: sock });
      await assert.rejects(serveNbd(dev, { socketPath: sock }), (e: unknown) => e instanceof MedvError && e.code === 'EEXIST');
      await first.close();
      // A socket file nobody listens on, as left by a killed server.
      execFileSync('/usr/bin/python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', sock]);
      assert.ok(statSync(sock).isSocket());
      server = await serveNbd(dev, { socketPath: sock });
      const c = await client();
      await c.go();
      const file = join(dir, 'plain');
      writeFileSync(file, 'x');
      await assert.rejects(serveNbd(dev, { socketPath: file }), (e: unknown) => e instanceof MedvError && e.code === 'EEXIST');
    });

    it('validates its options', async () => {
      await assert.rejects(serveNbd(dev, { socketPath: sock, minBlockSize: 3000 }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
      await assert.rejects(serveNbd(dev, { socketPath: sock, maxBlockSize: 1000 }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
    });

    it('lowers the minimum block size for a device whose size is not a multiple of 4096', async () => {
      await start({}, new MemoryDevice(1024 * 1024 + 512));
      const c = await client();
      const infos = await c.go();
      const bs = infos.find((i) => i.type === P.NBD_INFO_BLOCK_SIZE) as P.BlockSizes;
      assert.equal(bs.minimum, 512);
    });
  });

  it('survives random well-framed requests (seeded fuzz) and keeps the device consistent', async () => {
    await start({ maxBlockSize: 1 << 20 });
    let seed = 0x9e3779b9;
    const rnd = () => {
      seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
      return seed / 4294967296;
    };
    let c = await client();
    await c.go();
    const model = mem.snapshot();
    for (let i = 0; i < 300; i++) {
      if (c.closed) {
        c = await client();
        await c.go();
      }
      const type = Math.floor(rnd() * 9);
      const flags = rnd() < 0.5 ? 0 : Math.floor(rnd() * 65536);
      const length = rnd() < 0.7 ? Math.floor(rnd() * 16) * 512 : Math.floor(rnd() * 70000);
      const offset = rnd() < 0.7 ? Math.floor(rnd() * (SIZE / 512)) * 512 : Math.floor(rnd() * 2 ** 52);
      const data = type === P.NBD_CMD_WRITE ? randomBytes(length) : undefined;
      c.request(type, BigInt(i), offset, length, data, flags);
      if (type === P.NBD_CMD_DISC) {
        assert.ok(await c.waitClosed());
        continue;
      }
      const r = await c.reply((h) => (h === BigInt(i) && type === P.NBD_CMD_READ ? length : 0));
      assert.equal(r.handle, BigInt(i));
      const inRange = offset + length <= SIZE;
      const okFlags = (flags & ~(type === P.NBD_CMD_WRITE_ZEROES ? 3 : 1)) === 0;
      if (type === P.NBD_CMD_READ && r.error === 0) assert.ok(r.data.equals(model.subarray(offset, offset + length)));
      if (type === P.NBD_CMD_WRITE && r.error === 0) data!.copy(model, offset);
      if (type === P.NBD_CMD_WRITE_ZEROES && r.error === 0) model.fill(0, offset, offset + length);
      if (type === P.NBD_CMD_TRIM && r.error === 0) mem.snapshot().copy(model, offset, offset, offset + length);
      const valid = okFlags && (type === P.NBD_CMD_FLUSH ? offset === 0 && length === 0 : inRange);
      if ([P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_FLUSH].includes(type) && valid) {
        assert.equal(r.error, 0, `request ${i}: type ${type} flags ${flags} [${offset}, +${length})`);
      }
      if (!valid) assert.notEqual(r.error, 0, `request ${i}: type ${type} flags ${flags} [${offset}, +${length}) should fail`);
    }
    assert.ok(mem.snapshot().equals(model));
  });

  it('does not crash on garbage from a raw socket', async () => {
    await start();
    for (const junk of [randomBytes(3), randomBytes(100), Buffer.alloc(0)]) {
      const s = connect(sock);
      s.on('error', () => undefined);
      s.resume();
      await new Promise((r) => s.once('connect', r));
      s.end(junk);
      await new Promise((r) => s.once('close', r));
    }
    const c = await client();
    await c.go();
  });
});
