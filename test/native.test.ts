import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MedvError } from '../src/core/errors.js';
import { type NativeApi, fallback, native, nativeAddon } from '../src/native.js';

/** Reference: node:crypto, one cipher per unit, tweak = unit number little-endian. */
function reference(key: Buffer, input: Buffer, firstUnit: number, unitSize: number, encrypt: boolean): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < input.length / unitSize; i++) {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64LE(BigInt(firstUnit + i));
    const c = encrypt ? createCipheriv('aes-256-xts', key, iv) : createDecipheriv('aes-256-xts', key, iv);
    out.push(c.update(input.subarray(i * unitSize, (i + 1) * unitSize)), c.final());
  }
  return Buffer.concat(out);
}

const isArgError = (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG';

const addon = nativeAddon();
const impls: Array<[string, NativeApi | undefined]> = [['addon', addon], ['fallback', fallback]];

describe('native', () => {
  it('loads the addon (built by node-gyp) unless MEDV_NO_NATIVE=1', function () {
    if (process.env.MEDV_NO_NATIVE === '1') {
      assert.equal(native.available, false);
      return;
    }
    if (!addon) this.skip();
    assert.equal(native.available, true);
  });

  for (const [name, impl] of impls) {
    describe(name, () => {
      before(function () { if (!impl) this.skip(); });

      it('xtsCrypt matches node:crypto for 4 KiB and 512-byte units, any first unit', () => {
        const api = impl!;
        const key = randomBytes(64);
        for (const [unitSize, units, first] of [[4096, 33, 0], [512, 9, 7], [4096, 3, 2 ** 40 + 5], [16, 4, 1]] as const) {
          const plain = randomBytes(unitSize * units);
          const ct = Buffer.alloc(plain.length);
          api.xtsCrypt(key, plain, ct, first, unitSize, true);
          assert.ok(ct.equals(reference(key, plain, first, unitSize, true)), `encrypt ${unitSize}x${units}@${first}`);
          const back = Buffer.alloc(plain.length);
          api.xtsCrypt(key, ct, back, first, unitSize, false);
          assert.ok(back.equals(plain), 'decrypt');
        }
      });

      it('xtsCrypt works in place and leaves other bytes of output alone', () => {
        const api = impl!;
        const key = randomBytes(64);
        const plain = randomBytes(4096 * 5);
        const buf = Buffer.from(plain);
        api.xtsCrypt(key, buf, buf, 11, 4096, true);
        assert.ok(buf.equals(reference(key, plain, 11, 4096, true)));
        api.xtsCrypt(key, buf, buf, 11, 4096, false);
        assert.ok(buf.equals(plain));
        const big = Buffer.alloc(4096 * 2 + 10, 0xaa);
        api.xtsCrypt(key, plain.subarray(0, 8192), big, 0, 4096, true);
        assert.ok(big.subarray(8192).equals(Buffer.alloc(10, 0xaa)));
        api.xtsCrypt(key, Buffer.alloc(0), Buffer.alloc(0), 0, 4096, true); // nothing to do
      });

      it('known vector: IEEE 1619 XTS-AES-256 vector 10 (tweak 0xff, 512-byte unit)', () => {
        const api = impl!;
        const key = Buffer.from('2718281828459045235360287471352662497757247093699959574966967627' +
          '3141592653589793238462643383279502884197169399375105820974944592', 'hex');
        const plain = Buffer.alloc(512);
        for (let i = 0; i < 512; i++) plain[i] = i & 0xff;
        const ct = Buffer.alloc(512);
        api.xtsCrypt(key, plain, ct, 0xff, 512, true);
        assert.equal(ct.subarray(0, 16).toString('hex'), '1c3b3a102f770386e4836c99e370cf9b');
        assert.ok(ct.equals(reference(key, plain, 0xff, 512, true)));
      });

      it('xtsCrypt rejects bad arguments with EINVAL_ARG', () => {
        const api = impl!;
        const key = randomBytes(64);
        const b = Buffer.alloc(8192);
        assert.throws(() => api.xtsCrypt(randomBytes(32), b, b, 0, 4096, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, Buffer.alloc(4097), Buffer.alloc(8192), 0, 4096, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, b, Buffer.alloc(4096), 0, 4096, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, b, b, -1, 4096, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, b, b, 0.5, 4096, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, b, b, 0, 4000, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, b, b, 0, 0, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, b.subarray(0, 4096), b.subarray(16, 4112), 0, 4096, true), isArgError);
        assert.throws(() => api.xtsCrypt(key, b, b, 0, 4096, 1 as unknown as boolean), isArgError);
        // Equal halves: refused for encryption (IEEE 1619), typed ECRYPTO, by both implementations.
        assert.throws(() => api.xtsCrypt(Buffer.alloc(64, 7), b, b, 0, 4096, true), (e: unknown) => e instanceof MedvError && e.code === 'ECRYPTO');
      });

      it('xtsCrypt agrees with node:crypto at the edges: the largest unit (16 MiB), decryption under a key of equal halves', () => {
        const api = impl!;
        const key = randomBytes(64);
        const big = randomBytes(16 << 20);
        const ct = Buffer.alloc(big.length);
        api.xtsCrypt(key, big, ct, 3, big.length, true);
        assert.ok(ct.equals(reference(key, big, 3, big.length, true)), '16 MiB unit');
        // Node's OpenSSL decrypts under equal halves (it refuses them only to encrypt): the addon
        // (libgcrypt) must give the same bytes, so either implementation reads what the other can.
        const weak = Buffer.alloc(64, 7);
        const data = randomBytes(4096 * 2);
        const plain = Buffer.alloc(data.length);
        api.xtsCrypt(weak, data, plain, 9, 4096, false);
        assert.ok(plain.equals(reference(weak, data, 9, 4096, false)), 'equal halves, decrypt');
      });

      it('xtsCryptAsync gives the same bytes as node:crypto, in place, many at once; bad arguments reject as xtsCrypt throws', async () => {
        const api = impl!;
        const key = randomBytes(64);
        const plains = Array.from({ length: 8 }, () => randomBytes(4096 * 64));
        const bufs = plains.map((p) => Buffer.from(p));
        await Promise.all(bufs.map((b, i) => api.xtsCryptAsync(key, b, b, i * 1000, 4096, true)));
        bufs.forEach((b, i) => assert.ok(b.equals(reference(key, plains[i], i * 1000, 4096, true)), `batch ${i}`));
        await Promise.all(bufs.map((b, i) => api.xtsCryptAsync(key, b, b, i * 1000, 4096, false)));
        bufs.forEach((b, i) => assert.ok(b.equals(plains[i]), `round trip ${i}`));
        // Thrown synchronously by xtsCrypt, a rejection here (never a throw from the call).
        let p: Promise<void> | undefined;
        assert.doesNotThrow(() => { p = api.xtsCryptAsync(randomBytes(32), bufs[0], bufs[0], 0, 4096, true); });
        await assert.rejects(p!, isArgError);
        await assert.rejects(api.xtsCryptAsync(Buffer.alloc(64, 7), bufs[0], bufs[0], 0, 4096, true), (e: unknown) => e instanceof MedvError && e.code === 'ECRYPTO');
      });

      it('preadXtsAsync reads a file range and decrypts it in place, zeros past the end; errors reject typed', async () => {
        const api = impl!;
        const dir = fs.mkdtempSync(join(tmpdir(), 'medv-preadxts-'));
        try {
          const key = randomBytes(64);
          const plain = randomBytes(4096 * 40);
          const file = join(dir, 'f');
          // 512 bytes of something else first: the range starts at a file position that is not unit 0.
          fs.writeFileSync(file, Buffer.concat([randomBytes(512), reference(key, plain, 0, 4096, true)]));
          const fd = fs.openSync(file, 'r');
          try {
            const bufs = [0, 5, 17, 30].map(() => Buffer.alloc(4096 * 8, 0xa5));
            await Promise.all(bufs.map((b, i) => api.preadXtsAsync(fd, b, 512 + [0, 5, 17, 30][i] * 4096, key, [0, 5, 17, 30][i], 4096)));
            bufs.forEach((b, i) => {
              const u = [0, 5, 17, 30][i];
              assert.ok(b.equals(plain.subarray(u * 4096, (u + 8) * 4096)), `units ${u}..${u + 8}`);
            });
            // Past the end of the file: the last 2 units read as zeros before decryption.
            const tail = Buffer.alloc(4096 * 4);
            await api.preadXtsAsync(fd, tail, 512 + 38 * 4096, key, 38, 4096);
            assert.ok(tail.subarray(0, 8192).equals(plain.subarray(38 * 4096)));
            const zeros = Buffer.alloc(8192);
            api.xtsCrypt(key, zeros, zeros, 40, 4096, false);
            assert.ok(tail.subarray(8192).equals(zeros), 'zeros past the end, decrypted like any data');
            await assert.rejects(api.preadXtsAsync(fd, Buffer.alloc(4000), 0, key, 0, 4096), isArgError);
            await assert.rejects(api.preadXtsAsync(fd, Buffer.alloc(4096), 0, randomBytes(32), 0, 4096), isArgError);
            await assert.rejects(api.preadXtsAsync(-1, Buffer.alloc(4096), 0, key, 0, 4096), isArgError);
          } finally {
            fs.closeSync(fd);
          }
          // A descriptor open for writing only: the read's own system error, with Node's code.
          const wfd = fs.openSync(file, 'a');
          try {
            await assert.rejects(api.preadXtsAsync(wfd, Buffer.alloc(4096), 0, key, 0, 4096), { code: 'EBADF' });
          } finally {
            fs.closeSync(wfd);
          }
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      });

      it('fallocate punches holes and zeroes ranges (addon); the fallback declines so callers write zeros', async () => {
        const api = impl!;
        const dir = fs.mkdtempSync(join(tmpdir(), 'medv-native-'));
        try {
          const p = join(dir, 'f');
          const data = randomBytes(1 << 20);
          fs.writeFileSync(p, data);
          const fd = fs.openSync(p, 'r+');
          try {
            fs.fsyncSync(fd);
            const blocksBefore = fs.fstatSync(fd).blocks;
            const punched = await api.fallocate(fd, 'punch', 256 * 1024, 512 * 1024);
            const zeroed = await api.fallocate(fd, 'zero', 4096, 8192);
            assert.equal(punched, api.available, 'the addon punches; the fallback declines');
            assert.equal(zeroed, api.available);
            const now = fs.readFileSync(p);
            assert.equal(now.length, data.length, 'the file keeps its size');
            if (api.available) {
              assert.ok(now.subarray(256 * 1024, 768 * 1024).equals(Buffer.alloc(512 * 1024)), 'a punched range reads zeros');
              assert.ok(now.subarray(4096, 12288).equals(Buffer.alloc(8192)), 'a zeroed range reads zeros');
              assert.ok(now.subarray(0, 4096).equals(data.subarray(0, 4096)) && now.subarray(768 * 1024).equals(data.subarray(768 * 1024)), 'nothing else changed');
              assert.ok(fs.fstatSync(fd).blocks <= blocksBefore - (512 * 1024) / 512, `the hole is deallocated (${blocksBefore} -> ${fs.fstatSync(fd).blocks} blocks)`);
            } else {
              assert.ok(now.equals(data), 'the fallback changes nothing');
            }
          } finally {
            fs.closeSync(fd);
          }
          if (api.available) await assert.rejects(api.fallocate(fd, 'punch', 0, 4096), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
          await assert.rejects(async () => api.fallocate(-1, 'punch', 0, 1), isArgError);
          await assert.rejects(async () => api.fallocate(0, 'shred' as 'punch', 0, 1), isArgError);
          await assert.rejects(async () => api.fallocate(0, 'zero', 0, 0), isArgError);
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      });

      it('dataSegments finds the data of a sparse file (SEEK_DATA / SEEK_HOLE), at most `max` segments at a time', async () => {
        const api = impl!;
        const dir = fs.mkdtempSync(join(tmpdir(), 'medv-native-'));
        try {
          const p = join(dir, 'sparse');
          const fd = fs.openSync(p, 'w+');
          try {
            const G = 1 << 30;
            fs.ftruncateSync(fd, 16 * G); // 16 GiB, data at 1 MiB, 5 GiB and in the last 64 KiB
            fs.writeSync(fd, randomBytes(8192), 0, 8192, 1 << 20);
            fs.writeSync(fd, randomBytes(1 << 20), 0, 1 << 20, 5 * G);
            fs.writeSync(fd, randomBytes(65536), 0, 65536, 16 * G - 65536);
            const all = await api.dataSegments(fd, 0, 16 * G, 1024);
            assert.ok(all, 'the allocation is known');
            assert.deepEqual(all.segments, [[1 << 20, (1 << 20) + 8192], [5 * G, 5 * G + (1 << 20)], [16 * G - 65536, 16 * G]]);
            assert.equal(all.covered, 16 * G);
            const clipped = await api.dataSegments(fd, (1 << 20) + 4096, 5 * G + 4096, 1024);
            assert.deepEqual(clipped!.segments, [[(1 << 20) + 4096, (1 << 20) + 8192], [5 * G, 5 * G + 4096]]);
            const first = await api.dataSegments(fd, 0, 16 * G, 1);
            assert.deepEqual(first, { segments: [[1 << 20, (1 << 20) + 8192]], covered: (1 << 20) + 8192 });
            assert.deepEqual(await api.dataSegments(fd, 2 << 20, 4 * G, 8), { segments: [], covered: 4 * G });
          } finally {
            fs.closeSync(fd);
          }
          await assert.rejects(async () => api.dataSegments(-1, 0, 1, 1), isArgError);
          await assert.rejects(async () => api.dataSegments(0, 10, 5, 1), isArgError);
          await assert.rejects(async () => api.dataSegments(0, 0, 1, 0), isArgError);
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      });

      it('kvmProbe answers with a boolean and a reason when unavailable', () => {
        const r = impl!.kvmProbe();
        assert.equal(typeof r.available, 'boolean');
        if (!r.available) assert.equal(typeof r.reason, 'string');
        if (name === 'addon' && fs.existsSync('/dev/kvm')) {
          // Both agree on this machine (/dev/kvm works here).
          assert.equal(r.available, fallback.kvmProbe().available);
        }
      });
    });
  }

  it('preadNoWait reads what the page cache holds, and the fallback defers to the thread pool', function () {
    const dir = fs.mkdtempSync(join(tmpdir(), 'medv-nowait-'));
    try {
      const file = join(dir, 'f');
      const data = randomBytes(64 * 1024);
      fs.writeFileSync(file, data); // just written: in the page cache
      const fd = fs.openSync(file, 'r');
      try {
        const buf = Buffer.alloc(8192);
        assert.equal(fallback.preadNoWait(fd, buf, 0, 0), -1);
        const addon = nativeAddon();
        if (!addon) this.skip();
        assert.equal(addon!.preadNoWait(fd, buf, 0, 4096), 8192);
        assert.ok(buf.equals(data.subarray(4096, 4096 + 8192)));
        assert.equal(addon!.preadNoWait(fd, buf, 0, data.length - 100), 100, 'short at EOF');
        assert.equal(addon!.preadNoWait(fd, buf, 0, data.length), -1, 'nothing to read at EOF');
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('xtsFromMapAsync decrypts from a file mapping; a truncated file gives EIO, not SIGBUS; unmap waits for reads in flight', async function () {
    const addon = nativeAddon();
    assert.equal(fallback.mapFile(0, 4096), undefined, 'the fallback maps nothing');
    if (!addon) this.skip();
    const dir = fs.mkdtempSync(join(tmpdir(), 'medv-map-'));
    try {
      const key = randomBytes(64);
      const plain = randomBytes(4096 * 64);
      const file = join(dir, 'f');
      fs.writeFileSync(file, reference(key, plain, 0, 4096, true));
      const fd = fs.openSync(file, 'r+');
      try {
        const map = addon!.mapFile(fd, plain.length);
        if (!map) this.skip();
        const bufs = Array.from({ length: 8 }, () => Buffer.alloc(4096 * 8));
        const reads = bufs.map((b, i) => addon!.xtsFromMapAsync(map!, i * 8 * 4096, b, key, i * 8, 4096));
        await Promise.all(reads);
        bufs.forEach((b, i) => assert.ok(b.equals(plain.subarray(i * 8 * 4096, (i + 1) * 8 * 4096)), `part ${i}`));
        await assert.rejects(addon!.xtsFromMapAsync(map!, plain.length - 4096, Buffer.alloc(8192), key, 0, 4096), isArgError, 'past the mapping');
        // Someone truncates the file under the mapping: its pages past the new end are gone.
        fs.ftruncateSync(fd, 4096 * 16);
        await assert.rejects(addon!.xtsFromMapAsync(map!, 4096 * 32, Buffer.alloc(4096 * 4), key, 32, 4096), { code: 'EIO' });
        const head = Buffer.alloc(4096 * 4);
        await addon!.xtsFromMapAsync(map!, 4096 * 4, head, key, 4, 4096);
        assert.ok(head.equals(plain.subarray(4096 * 4, 4096 * 8)), 'the rest of the mapping still reads');
        // Unmapped while reads are in flight: they finish; new ones are refused.
        const late = Buffer.alloc(4096 * 8);
        const inFlight = addon!.xtsFromMapAsync(map!, 0, late, key, 0, 4096);
        addon!.unmapFile(map!);
        await inFlight;
        assert.ok(late.equals(plain.subarray(0, 4096 * 8)));
        await assert.rejects(addon!.xtsFromMapAsync(map!, 0, Buffer.alloc(4096), key, 0, 4096), isArgError);
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sendFileReply sends a header and page-cached file bytes on a socket; pageCached tells; setSendBuffer; the fallback declines', async function () {
    const dir = fs.mkdtempSync(join(tmpdir(), 'medv-sendfile-'));
    const server = net.createServer();
    try {
      const file = join(dir, 'f');
      const data = randomBytes(256 * 1024);
      fs.writeFileSync(file, data); // just written: in the page cache
      const fd = fs.openSync(file, 'r');
      const sockPath = join(dir, 's');
      const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
      await new Promise<void>((r) => server.listen(sockPath, r));
      const client = net.connect(sockPath);
      const got: Buffer[] = [];
      client.on('data', (b) => got.push(b));
      const peer = await accepted;
      try {
        const sockfd = (peer as unknown as { _handle: { fd: number } })._handle.fd;
        const header = Buffer.from('header!');
        assert.equal(fallback.sendFileReply(sockfd, header, fd, 0, 4096), -1);
        assert.equal(fallback.pageCached(fd, 0, 4096), false);
        assert.throws(() => fallback.sendFileReply(sockfd, header, -1, 0, 4096), isArgError);
        assert.throws(() => fallback.pageCached(fd, -1, 4096), isArgError);
        assert.equal(fallback.setSendBuffer(sockfd, 1 << 20), -1);
        assert.throws(() => fallback.setSendBuffer(sockfd, 0), isArgError);
        const addon = nativeAddon();
        if (!addon) this.skip();
        assert.throws(() => addon!.sendFileReply(sockfd, header, fd, 0, 2 ** 40), isArgError);
        assert.ok(addon!.setSendBuffer(sockfd, 1 << 20) > 0, 'SO_SNDBUF in effect');
        if (!addon!.pageCached(fd, 0, data.length)) this.skip(); // a kernel without cachestat(2)
        assert.equal(addon!.pageCached(fd, data.length - 4096, 8192), false, 'past the end is not cached');
        assert.equal(addon!.sendFileReply(sockfd, header, fd, 0, 0), -1, 'nothing to send');
        assert.equal(addon!.sendFileReply(sockfd, header, fd, data.length, 4096), -1, 'past the end');
        assert.equal(addon!.sendFileReply(sockfd, header, fd, 4096, 8192), header.length + 8192);
        const expected = Buffer.concat([header, data.subarray(4096, 4096 + 8192)]);
        for (let i = 0; i < 100 && Buffer.concat(got).length < expected.length; i++) await new Promise((r) => setTimeout(r, 10));
        assert.ok(Buffer.concat(got).equals(expected));
      } finally {
        client.destroy();
        peer.destroy();
        fs.closeSync(fd);
      }
    } finally {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('MEDV_NO_NATIVE=1 selects the fallback in a fresh process', function () {
    const here = fileURLToPath(new URL('../src/native.js', import.meta.url));
    const code = `import(${JSON.stringify(here)}).then(m => { console.log(JSON.stringify({a: m.native.available, r: m.native.reason})); })`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env: { ...process.env, MEDV_NO_NATIVE: '1' }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { a: false, r: 'MEDV_NO_NATIVE=1' });
  });
});
