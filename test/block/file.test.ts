import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDevice } from '../../src/block/file.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { describeConformance } from '../conformance/blockdevice.js';

describeConformance('file', async (size) => {
  const dir = mkdtempSync(join(tmpdir(), 'medv-file-'));
  const path = join(dir, 'disk.img');
  const device = await FileDevice.open(path, { create: true, size });
  return { device, reopen: () => FileDevice.open(path), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

describeConformance('memory', async (size) => ({ device: new MemoryDevice(size) }));
