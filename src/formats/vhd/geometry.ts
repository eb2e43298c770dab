/**
 * CHS geometry of a VHD (VHD 1.0 specification, appendix "CHS Calculation"), and the size rules
 * qemu applies (block/vpc.c) so that medv and qemu agree on every disk's size.
 */
import { SECTOR, VHD_MAX_SECTORS } from './common.js';

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

export const MAX_GEOMETRY: Geometry = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 };
/** 65535 * 16 * 255 sectors: the saturated geometry, meaning "the size is in current_size". */
export const MAX_GEOMETRY_SECTORS = 65535 * 16 * 255;

export function geometrySectors(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}

/** The specification's algorithm, exactly (it may round the size down). */
export function chsGeometry(totalSectors: number): Geometry {
  const sectors = Math.min(Math.max(0, Math.floor(totalSectors)), MAX_GEOMETRY_SECTORS);
  let spt: number;
  let heads: number;
  let cth: number; // cylinders times heads
  if (sectors >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(sectors / spt);
  } else {
    spt = 17;
    cth = Math.floor(sectors / spt);
    heads = Math.floor((cth + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(sectors / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(sectors / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

/**
 * What `qemu-img create -f vpc` does without force_size: round the size up to 512 bytes, then
 * search upwards for a geometry covering it. When only the saturated geometry covers it, the exact
 * (512-rounded) size is kept and current_size is authoritative. Returns the size the disk will
 * have and its geometry. Throws nothing: callers check `size <= VHD_MAX_SIZE` themselves.
 */
export function roundedDiskSize(requested: number): { size: number; geometry: Geometry } {
  const totalSize = Math.ceil(requested / SECTOR) * SECTOR;
  const want = Math.min(MAX_GEOMETRY_SECTORS, totalSize / SECTOR);
  let g: Geometry = { cylinders: 0, heads: 0, sectorsPerTrack: 0 };
  for (let i = 0; want > geometrySectors(g); i++) g = chsGeometry(want + i);
  if (geometrySectors(g) === MAX_GEOMETRY_SECTORS) return { size: totalSize, geometry: { ...MAX_GEOMETRY } };
  return { size: geometrySectors(g) * SECTOR, geometry: g };
}

/**
 * The geometry to record for a disk that must have exactly `size` bytes (a differencing disk takes
 * its parent's size): the spec's geometry when it represents the size exactly, otherwise the
 * saturated geometry so that readers (qemu, medv) take current_size.
 */
export function exactGeometry(size: number): Geometry {
  if (size % SECTOR === 0) {
    const g = chsGeometry(size / SECTOR);
    if (geometrySectors(g) * SECTOR === size) return g;
  }
  return { ...MAX_GEOMETRY };
}

/** Creator applications whose disks qemu sizes by current_size (block/vpc.c). */
const CURRENT_SIZE_CREATORS = new Set(['win ', 'qem2', 'd2v ', 'tap\0', 'CTXS']);

/**
 * The disk size qemu computes: from CHS for "vpc ", "qemu" and unknown creators, from current_size
 * for "win ", "qem2", "d2v ", "tap\0", "CTXS", and from current_size whenever CHS is saturated.
 * current_size counts whole sectors (rounded down), as in qemu.
 */
export function diskSizeFromFooter(creatorApp: string, geometry: Geometry, currentSize: bigint): bigint {
  let sectors = BigInt(geometrySectors(geometry));
  if (CURRENT_SIZE_CREATORS.has(creatorApp) || sectors === BigInt(MAX_GEOMETRY_SECTORS)) {
    sectors = currentSize / BigInt(SECTOR);
  }
  return sectors * BigInt(SECTOR);
}

export const MAX_DISK_SECTORS = VHD_MAX_SECTORS;
