/**
 * The tiny test guest built from vm/guest.asm (see vm/README.md): where its image is, and the
 * constants it writes and prints. Tests and the demo use these; change them only together with the asm.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export function testGuestImage(): string { return join(REPO, 'vm/build/guest.img'); }

export const TEST_GUEST = {
  marker: Buffer.from('MEDV-GUEST-MARKER-PLAINTEXT-0001'),
  markerLba: 64,
  counterLba: 1,
  serial: {
    boot: /MEDV-GUEST boot=(\d+)/,
    marker: /MEDV-GUEST marker-written/,
    ready: /MEDV-GUEST ready/,
    powerdown: /MEDV-GUEST powerdown/,
  },
  readCounter(sector: Buffer): number { return sector.readUInt32LE(4); },
};
