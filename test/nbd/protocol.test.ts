import assert from 'node:assert/strict';
import type { Extent } from '../../src/block/device.js';
import { ByteQueue } from '../../src/nbd/bytequeue.js';
import { toDescriptors } from '../../src/nbd/extents.js';
import { nbdErrno } from '../../src/nbd/errno.js';
import * as P from '../helpers/nbd-codec.js';
import { MedvError } from '../../src/core/errors.js';

const isProto = (e: unknown) => e instanceof MedvError && e.code === 'EPROTO';

describe('nbd protocol codec', () => {
  it('encodes the newstyle greeting with the exact magics', () => {
    const g = P.encodeGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
    assert.equal(g.toString('hex'), '4e42444d41474943' + '49484156454f5054' + '0003');
    assert.deepEqual(P.decodeGreeting(g), { handshakeFlags: 3 });
    assert.throws(() => P.decodeGreeting(g.subarray(0, 17)), isProto);
    const bad = Buffer.from(g);
    bad[9] ^= 1;
    assert.throws(() => P.decodeGreeting(bad), isProto);
  });

  it('round-trips option headers and replies and rejects bad magic', () => {
    const o = P.encodeOption(P.NBD_OPT_GO, Buffer.from('abc'));
    assert.deepEqual(P.decodeOptionHeader(o), { option: P.NBD_OPT_GO, length: 3 });
    const bad = Buffer.from(o);
    bad[0] = 0;
    assert.throws(() => P.decodeOptionHeader(bad), isProto);
    const r = P.encodeOptionReply(P.NBD_OPT_LIST, P.NBD_REP_ERR_UNSUP, Buffer.from('no'));
    assert.deepEqual(P.decodeOptionReplyHeader(r), { option: P.NBD_OPT_LIST, type: P.NBD_REP_ERR_UNSUP, length: 2 });
    assert.equal(P.NBD_REP_ERR_UNSUP, 0x80000001);
    assert.ok(P.isOptionError(P.NBD_REP_ERR_UNKNOWN));
    assert.ok(!P.isOptionError(P.NBD_REP_INFO));
  });

  it('round-trips INFO/GO requests and validates their lengths', () => {
    const data = P.encodeInfoRequest({ name: 'disk', requests: [P.NBD_INFO_NAME, P.NBD_INFO_BLOCK_SIZE] });
    assert.equal(data.length, 4 + 4 + 2 + 4);
    assert.deepEqual(P.decodeInfoRequest(data), { name: 'disk', requests: [1, 3] });
    assert.throws(() => P.decodeInfoRequest(data.subarray(0, data.length - 1)), isProto);
    assert.throws(() => P.decodeInfoRequest(Buffer.concat([data, Buffer.alloc(1)])), isProto);
    const huge = Buffer.alloc(6);
    huge.writeUInt32BE(0xffffffff, 0);
    assert.throws(() => P.decodeInfoRequest(huge), isProto);
    assert.throws(() => P.decodeInfoRequest(Buffer.alloc(2)), isProto);
    const nul = P.encodeInfoRequest({ name: 'a\0b', requests: [] });
    assert.throws(() => P.decodeInfoRequest(nul), isProto);
    const badUtf8 = Buffer.from([0, 0, 0, 1, 0xff, 0, 0]);
    assert.throws(() => P.decodeInfoRequest(badUtf8), isProto);
  });

  it('round-trips NBD_REP_INFO payloads', () => {
    assert.deepEqual(P.decodeInfo(P.encodeInfoExport(2 ** 40 + 512, 0x1ed)), { type: P.NBD_INFO_EXPORT, size: 2 ** 40 + 512, flags: 0x1ed });
    assert.deepEqual(P.decodeInfo(P.encodeInfoString(P.NBD_INFO_NAME, 'x')), { type: P.NBD_INFO_NAME, name: 'x' });
    assert.deepEqual(P.decodeInfo(P.encodeInfoBlockSize({ minimum: 4096, preferred: 65536, maximum: 1 << 25 })),
      { type: P.NBD_INFO_BLOCK_SIZE, minimum: 4096, preferred: 65536, maximum: 1 << 25 });
    assert.throws(() => P.decodeInfo(P.encodeInfoExport(1, 1).subarray(0, 11)), isProto);
    assert.throws(() => P.decodeInfo(Buffer.alloc(1)), isProto);
    assert.deepEqual(P.decodeRepServer(P.encodeRepServer('n', 'desc')), { name: 'n', description: 'desc' });
  });

  it('encodes the EXPORT_NAME reply with or without the 124 zero bytes', () => {
    assert.equal(P.encodeExportNameReply(1024, 1, true).length, 10);
    const full = P.encodeExportNameReply(1024, 1, false);
    assert.equal(full.length, 134);
    assert.equal(full.readBigUInt64BE(0), 1024n);
    assert.ok(full.subarray(10).equals(Buffer.alloc(124)));
  });

  it('decodes requests, keeps the handle exact and flags offsets beyond 2^53', () => {
    const b = P.encodeRequest({ flags: P.NBD_CMD_FLAG_FUA, type: P.NBD_CMD_WRITE, handle: 0xdeadbeefcafef00dn, offset: 2 ** 40, length: 4096 });
    const r = P.decodeRequest(b);
    assert.equal(r.type, P.NBD_CMD_WRITE);
    assert.equal(r.flags, 1);
    assert.equal(r.offset, 2 ** 40);
    assert.equal(r.length, 4096);
    const reply = Buffer.alloc(16);
    P.writeSimpleReply(reply, 0, P.NBD_EIO, r.handleHi, r.handleLo);
    assert.deepEqual(P.decodeSimpleReply(reply), { error: 5, handle: 0xdeadbeefcafef00dn });
    const far = P.decodeRequest(P.encodeRequest({ type: 0, handle: 1n, offset: 0xfffffffffffff000n, length: 1 }));
    assert.ok(far.offset > Number.MAX_SAFE_INTEGER);
    const bad = Buffer.from(b);
    bad[3] = 0;
    assert.throws(() => P.decodeRequest(bad), isProto);
    assert.throws(() => P.decodeRequest(b.subarray(0, 27)), isProto);
    assert.throws(() => P.decodeSimpleReply(b.subarray(0, 16)), isProto);
  });

  it('maps medv error codes to NBD errno in one table', () => {
    assert.equal(nbdErrno(new MedvError('EREADONLY', 'x')), P.NBD_EPERM);
    assert.equal(nbdErrno(new MedvError('ERANGE', 'x')), P.NBD_EINVAL);
    assert.equal(nbdErrno(new MedvError('EIO', 'x')), P.NBD_EIO);
    assert.equal(nbdErrno(new MedvError('ENOSPACE', 'x')), P.NBD_ENOSPC);
    assert.equal(nbdErrno(new MedvError('ECORRUPT', 'x')), P.NBD_EIO);
    assert.equal(nbdErrno(new TypeError('bug')), P.NBD_EIO);
  });
});

describe('nbd ByteQueue', () => {
  it('peeks and takes across chunk boundaries without losing bytes', () => {
    const src = Buffer.from(Array.from({ length: 200 }, (_, i) => i));
    const q = new ByteQueue(32);
    for (let i = 0; i < 200; i += 7) q.push(src.subarray(i, Math.min(200, i + 7)));
    assert.equal(q.length, 200);
    const p = q.peek(28);
    assert.ok(p.subarray(q.peekOffset, q.peekOffset + 28).equals(src.subarray(0, 28)));
    q.consume(28);
    assert.ok(q.take(5).equals(src.subarray(28, 33)));
    assert.ok(q.take(50).equals(src.subarray(33, 83)));
    const dest = Buffer.alloc(20);
    assert.equal(q.takeInto(dest, 10, 10), 10);
    assert.ok(dest.subarray(10).equals(src.subarray(83, 93)));
    assert.equal(q.skip(100), 100);
    assert.equal(q.length, 7);
    assert.ok(q.take(7).equals(src.subarray(193)));
    assert.equal(q.length, 0);
  });

  it('returns a view, not a copy, when the bytes lie in one chunk', () => {
    const chunk = Buffer.alloc(100, 1);
    const q = new ByteQueue();
    q.push(chunk);
    const v = q.take(50);
    assert.equal(v.buffer, chunk.buffer);
  });
});

describe('nbd structured replies and meta contexts (codec)', () => {
  it('uses the option numbers QEMU and libnbd send (LIST_META_CONTEXT 9, SET_META_CONTEXT 10)', () => {
    assert.equal(P.NBD_OPT_STRUCTURED_REPLY, 8);
    assert.equal(P.NBD_OPT_LIST_META_CONTEXT, 9);
    assert.equal(P.NBD_OPT_SET_META_CONTEXT, 10);
  });

  it('round-trips meta context requests and rejects lying lengths and counts', () => {
    const req = { name: 'disk', queries: ['base:allocation', 'x-a:b'] };
    const b = P.encodeMetaContextRequest(req);
    assert.deepEqual(P.decodeMetaContextRequest(b), req);
    assert.throws(() => P.decodeMetaContextRequest(b.subarray(0, b.length - 1)), isProto);
    assert.throws(() => P.decodeMetaContextRequest(Buffer.concat([b, Buffer.from([0])])), isProto);
    const hugeCount = Buffer.from(b);
    hugeCount.writeUInt32BE(0xffffffff, 8); // after the 4-byte name length and 'disk'
    assert.throws(() => P.decodeMetaContextRequest(hugeCount), isProto);
    const hugeName = Buffer.from(b);
    hugeName.writeUInt32BE(0x7fffffff, 0);
    assert.throws(() => P.decodeMetaContextRequest(hugeName), isProto);
  });

  it('encodes structured reply chunks with the exact layout', () => {
    const d = P.encodeOffsetDataHeader(P.NBD_REPLY_FLAG_DONE, 1, 2, 4096, 512);
    assert.equal(d.toString('hex'), '668e33ef' + '0001' + '0001' + '00000001' + '00000002' + '00000208' + '0000000000001000');
    // Offsets past 4 GiB and up to 2^53 - 1, written in place after other bytes.
    const big = Buffer.alloc(3 + P.OFFSET_DATA_HEADER_SIZE, 0xee);
    P.writeOffsetDataHeader(big, 3, 0, 0xffffffff, 0, 2 ** 53 - 1, 4096);
    assert.equal(big.subarray(0, 3).toString('hex'), 'eeeeee');
    assert.equal(big.subarray(3).toString('hex'), '668e33ef' + '0000' + '0001' + 'ffffffff' + '00000000' + '00001008' + '001fffffffffffff');
    assert.equal(P.encodeOffsetDataHeader(0, 0, 0, 5 * 2 ** 32 + 7, 1).subarray(20).toString('hex'), '0000000500000007');
    const e = P.encodeErrorChunk(0, 9, P.NBD_EINVAL, 'bad');
    assert.deepEqual(P.decodeStructuredReplyHeader(e), { flags: 1, type: P.NBD_REPLY_TYPE_ERROR, handle: 9n, length: 9 });
    assert.equal(e.subarray(20).toString('hex'), '00000016' + '0003' + Buffer.from('bad').toString('hex'));
    const s = P.encodeBlockStatusChunk(P.NBD_REPLY_FLAG_DONE, 0, 3, 1, [{ length: 4096, flags: 3 }, { length: 8192, flags: 0 }]);
    assert.equal(s.subarray(20).toString('hex'), '00000001' + '00001000' + '00000003' + '00002000' + '00000000');
    assert.equal(P.decodeStructuredReplyHeader(s).type, P.NBD_REPLY_TYPE_BLOCK_STATUS);
  });
});

describe('nbd extents to base:allocation descriptors', () => {
  const D = (length: number): Extent => ({ length, hole: false, zero: false });
  const H = (length: number): Extent => ({ length, hole: true, zero: true });

  it('merges equal runs, never sums past the request, and clamps to maxCount', () => {
    assert.deepEqual(toDescriptors([D(4096), D(4096), H(8192)], 0, 12288, 4096, 100), [{ length: 8192, flags: 0 }, { length: 4096, flags: 3 }]);
    assert.deepEqual(toDescriptors([H(8192), D(4096)], 0, 12288, 4096, 1), [{ length: 8192, flags: 3 }]);
    assert.throws(() => toDescriptors([], 0, 4096, 4096, 10), (e: unknown) => e instanceof MedvError && e.code === 'EIO');
    assert.throws(() => toDescriptors([D(0)], 0, 4096, 4096, 10), (e: unknown) => e instanceof MedvError && e.code === 'EIO');
  });

  it('gives a block that mixes states only what all its parts share', () => {
    // 512 data inside the second 4 KiB block: that block is data; the rest keeps its state.
    assert.deepEqual(toDescriptors([H(4096 + 1024), D(512), H(8192)], 0, 13824, 4096, 100),
      [{ length: 4096, flags: 3 }, { length: 4096, flags: 0 }, { length: 13824 - 8192, flags: 3 }]);
    // A first part that ends inside a block is cut back to the block boundary.
    assert.deepEqual(toDescriptors([D(4096), H(6000)], 0, 65536, 4096, 100), [{ length: 4096, flags: 0 }, { length: 4096, flags: 3 }]);
  });
});
