/**
 * The tiny test guest built from vm/guest.asm (see vm/README.md): where its image is, what it
 * writes where, and what it prints. The numbers come from vm/layout.json, the single source the
 * build also uses, read on first use (importing this module never fails; `medv disk …` works
 * where vm/ is not shipped). These are test fixtures: the tests and `medv demo` use them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MedvError, fromSystemError } from '../core/errors.js';

/** The folder holding package.json above this module (the install or clone root). */
function findRoot(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (let dir = here; ;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return resolve(here, '..', '..');
    dir = up;
  }
}

/** The repository root (the folder holding package.json, and vm/ in a source tree). */
export const REPO_ROOT = findRoot();

interface Layout {
  imageBytes: number; sectorBytes: number; counterLba: number; counterMagic: string;
  markerLba: number; markerSectors: number; marker: string;
}

let layoutCache: Layout | undefined;

/**
 * The guest's numbers from vm/layout.json, read on first use (not at import: `medv disk …` must
 * work where vm/ is not shipped). ENOENT when the file is missing, EFORMAT when it is malformed.
 */
export function loadGuestLayout(): Layout {
  if (layoutCache) return layoutCache;
  const file = join(REPO_ROOT, 'vm', 'layout.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new MedvError('ENOENT', 'the test guest is not here (vm/layout.json is missing; the demo and the guest tests need the source tree)', { file });
    }
    throw fromSystemError(e, file);
  }
  let raw: Record<string, unknown>;
  try { raw = JSON.parse(text) as Record<string, unknown>; } catch {
    throw new MedvError('EFORMAT', 'vm/layout.json is not valid JSON', { file });
  }
  for (const k of ['imageBytes', 'sectorBytes', 'counterLba', 'markerLba', 'markerSectors'] as const) {
    if (!Number.isSafeInteger(raw?.[k]) || (raw[k] as number) < 0) throw new MedvError('EFORMAT', `vm/layout.json: ${k} must be a non-negative integer`, { file });
  }
  for (const k of ['counterMagic', 'marker'] as const) {
    if (typeof raw?.[k] !== 'string') throw new MedvError('EFORMAT', `vm/layout.json: ${k} must be a string`, { file });
  }
  layoutCache = raw as unknown as Layout;
  return layoutCache;
}

const L = loadGuestLayout;

/**
 * The test guest: where it is, what it writes where, and what it prints (COM1, CRLF lines).
 * The numbers are getters over vm/layout.json (loadGuestLayout), read on first use.
 */
export const GUEST = {
  /** The fresh raw image built by `npm run build`; copy it before booting it. */
  image: join(REPO_ROOT, 'vm', 'build', 'guest.img'),
  source: join(REPO_ROOT, 'vm', 'guest.asm'),
  get imageBytes(): number { return L().imageBytes; },
  get sectorBytes(): number { return L().sectorBytes; },
  /** The 32-byte ASCII pattern; it is in no built file, only where the guest wrote it. */
  get marker(): Buffer { return Buffer.from(L().marker, 'ascii'); },
  get markerLba(): number { return L().markerLba; },
  get markerSectors(): number { return L().markerSectors; },
  get markerOffset(): number { return L().markerLba * L().sectorBytes; },
  get markerBytes(): number { return L().markerSectors * L().sectorBytes; },
  /** Counter sector: 8-byte magic, then the boot count as a little-endian uint32. */
  get counterLba(): number { return L().counterLba; },
  get counterOffset(): number { return L().counterLba * L().sectorBytes; },
  get counterMagic(): Buffer { return Buffer.from(L().counterMagic, 'ascii'); },
  serial: {
    start: /MEDV-GUEST start\r?\n/,
    boot: /MEDV-GUEST boot=(\d+)\r?\n/,
    markerWritten: /MEDV-GUEST marker-written\r?\n/,
    /** Only on IDE: the drive acknowledged ATA FLUSH CACHE. */
    flushed: /MEDV-GUEST flushed\r?\n/,
    /** The power button is armed: send it now. */
    ready: /MEDV-GUEST ready\r?\n/,
    powerdown: /MEDV-GUEST powerdown\r?\n/,
    /** A failed int 13h call (e.g. counter-write on a read-only disk), with the BIOS status. */
    error: /MEDV-GUEST error=(\S+?)(?: ah=([0-9a-f]{2}))?\r?\n/,
  },
} as const;

/**
 * A guest KVM cannot run (vm/internal-error.asm): under KVM, QEMU stops it in run state
 * `internal-error` after `start`; under TCG it prints `x87-mmio-ok`.
 */
export const INTERNAL_ERROR_GUEST = {
  image: join(REPO_ROOT, 'vm', 'build', 'internal-error.img'),
  serial: { start: /MEDV-GUEST start\r?\n/, ok: /MEDV-GUEST x87-mmio-ok\r?\n/ },
} as const;

/** The block the guest writes at GUEST.markerOffset: the marker repeated over markerBytes. */
export function markerBlock(): Buffer {
  const b = Buffer.alloc(GUEST.markerBytes);
  for (let i = 0; i < b.length; i += GUEST.marker.length) GUEST.marker.copy(b, i);
  return b;
}

/** The boot count in the counter sector (GUEST.counterOffset of the disk); 0 without the magic. */
export function readCounter(sector: Buffer): number {
  if (sector.length < 12 || !sector.subarray(0, 8).equals(GUEST.counterMagic)) return 0;
  return sector.readUInt32LE(8);
}

/** The boot count stored in a disk's bytes (guest LBA space starting at `base`). */
export function bootCounter(disk: Buffer, base = 0): number {
  const at = base + GUEST.counterOffset;
  return readCounter(disk.subarray(at, at + 12));
}

/**
 * True when the file holds a marker-sized run of the guest's marker pattern at any phase of its
 * repetition (streamed; the "no plaintext at rest" check).
 */
export async function fileContainsMarker(path: string): Promise<boolean> {
  const m = GUEST.marker;
  const tripled = Buffer.concat([m, m, m]);
  const needles = Array.from({ length: m.length }, (_, phase) => tripled.subarray(phase, phase + m.length));
  const fh = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    let carry = Buffer.alloc(0);
    for (let pos = 0; ;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
      if (bytesRead === 0) return false;
      pos += bytesRead;
      const window = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
      if (needles.some((n) => window.includes(n))) return true;
      carry = Buffer.from(window.subarray(Math.max(0, window.length - (m.length - 1))));
    }
  } finally {
    await fh.close();
  }
}
