/**
 * The footer's saved-state flag (VHD 1.0, footer byte 84) on a VhdDevice: set and cleared in both
 * footer copies with the checksum right, kept across block allocations, and refused for writable
 * opens unless allowed.
 */
import assert from 'node:assert/strict';
import { MemoryDevice } from '../../../src/block/memory.js';
import { createVhd, openVhd } from '../../../src/layers/vhd/index.js';

/** The spec's checksum: ones' complement of the byte sum, the checksum field counted as zero. */
function checksum(f: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 512; i++) if (i < 64 || i >= 68) sum += f[i];
  return (~sum) >>> 0;
}

async function footers(storage: MemoryDevice, dynamic: boolean): Promise<Buffer[]> {
  const end = await storage.read(storage.size - 512, 512);
  return dynamic ? [end, await storage.read(0, 512)] : [end];
}

describe('layers/vhd: the saved-state flag', () => {
  for (const type of ['fixed', 'dynamic'] as const) {
    it(`${type}: set, survives an allocation, blocks writable opens, cleared`, async () => {
      const storage = new MemoryDevice(0);
      await createVhd(storage, { type, size: 8 << 20 });
      const vhd = await openVhd(storage);
      const before = await footers(storage, type === 'dynamic');
      await vhd.setSavedState(true);
      for (const [i, f] of (await footers(storage, type === 'dynamic')).entries()) {
        assert.equal(f[84], 1);
        assert.equal(f.readUInt32BE(64), checksum(f));
        // Every other byte is kept.
        const a = Buffer.from(f); const b = Buffer.from(before[i]);
        a[84] = b[84] = 0; a.fill(0, 64, 68); b.fill(0, 64, 68);
        assert.ok(a.equals(b));
      }
      // A block allocated now writes a new footer: it keeps the flag.
      await vhd.write(4 << 20, Buffer.alloc(4096, 7));
      await vhd.flush();
      const after = await footers(storage, type === 'dynamic');
      assert.equal(after[0][84], 1);
      assert.equal(after[0].readUInt32BE(64), checksum(after[0]));
      await vhd.close();
      const img = storage.snapshot();
      // Writable opens are refused, read-only and allowed ones are not.
      await assert.rejects(openVhd(MemoryDevice.from(img), { name: 'x.vhd' }), (e: { code?: string; message?: string }) => e.code === 'ESAVEDSTATE' && /x\.vhd.*suspended VM/.test(e.message ?? ''));
      const ro = await openVhd(MemoryDevice.from(img), { readOnly: true });
      assert.equal(ro.info.savedState, true);
      const stored = MemoryDevice.from(img);
      const resumed = await openVhd(stored, { allowSavedState: true });
      assert.ok((await resumed.read(4 << 20, 4096)).equals(Buffer.alloc(4096, 7)));
      await resumed.setSavedState(false);
      for (const f of await footers(stored, type === 'dynamic')) {
        assert.equal(f[84], 0);
        assert.equal(f.readUInt32BE(64), checksum(f));
      }
      const again = await openVhd(MemoryDevice.from(stored.snapshot()));
      assert.equal(again.info.savedState, false);
    });
  }

  it('a read-only device cannot set it', async () => {
    const storage = new MemoryDevice(0);
    await createVhd(storage, { type: 'dynamic', size: 8 << 20 });
    const ro = await openVhd(storage, { readOnly: true });
    await assert.rejects(ro.setSavedState(true), (e: { code?: string }) => e.code === 'EREADONLY');
  });
});
