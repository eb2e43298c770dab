/**
 * From a device's extents to base:allocation descriptors: pure, no I/O.
 *
 * Descriptor boundaries fall on multiples of the advertised minimum block size (except at the ends
 * of the request), since a client must not be told about sub-block states: a block that mixes
 * states gets the states all its parts share (a hole only if all of it is a hole, zero only if all
 * of it reads as zeros), which is always a safe answer.
 */
import type { Extent } from '../block/device.js';
import { MedvError } from '../core/errors.js';
import { NBD_STATE_HOLE, NBD_STATE_ZERO, type BlockDescriptor } from './protocol.js';

interface Run { start: number; end: number; flags: number }

function flagsOf(e: Extent): number { return (e.hole ? NBD_STATE_HOLE : 0) | (e.zero ? NBD_STATE_ZERO : 0); }

/**
 * Descriptors for [offset, offset + length) from `extents` (consecutive, starting at offset; they may
 * cover only a first part). At most `maxCount` descriptors; their lengths never sum past `length`.
 */
export function toDescriptors(extents: readonly Extent[], offset: number, length: number, granularity: number, maxCount: number): BlockDescriptor[] {
  const end = offset + length;
  const runs: Run[] = [];
  let pos = offset;
  for (const e of extents) {
    if (!(Number.isSafeInteger(e.length) && e.length > 0)) throw new MedvError('EIO', `device returned an extent of length ${e.length}`, { offset: pos });
    const n = Math.min(e.length, end - pos);
    push(runs, { start: pos, end: pos + n, flags: flagsOf(e) });
    pos += n;
    if (pos >= end) break;
  }
  if (runs.length === 0) throw new MedvError('EIO', 'device returned no extents', { offset });
  let out = granularity > 1 ? align(runs, granularity) : runs;
  // A first part ending inside a block: drop the partial block (the client asks again from there).
  const last = out[out.length - 1];
  if (last.end < end && last.end % granularity !== 0 && out.length > 1) {
    const cut = Math.floor(last.end / granularity) * granularity;
    if (cut > last.start) last.end = cut; else out = out.slice(0, -1);
  }
  return out.slice(0, maxCount).map((r) => ({ length: r.end - r.start, flags: r.flags }));
}

function push(runs: Run[], r: Run): void {
  const last = runs[runs.length - 1];
  if (last && last.end === r.start && last.flags === r.flags) last.end = r.end;
  else runs.push({ ...r });
}

/** Move inner boundaries to multiples of g, giving each straddled block the flags its parts share. */
function align(runs: readonly Run[], g: number): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    let start = r.start;
    const prev = out[out.length - 1];
    if (prev && prev.end % g !== 0) {
      // prev ends inside a block: that block takes the flags both share, up to its end.
      const blockEnd = Math.min(r.end, Math.ceil(prev.end / g) * g);
      prev.flags &= r.flags;
      prev.end = blockEnd;
      start = blockEnd;
      if (start >= r.end) continue;
    }
    const alignedEnd = Math.floor(r.end / g) * g;
    if (alignedEnd > start) {
      // prev (if any) now ends on a block boundary, so merging with it is safe.
      push(out, { start, end: alignedEnd, flags: r.flags });
      start = alignedEnd;
    }
    // An unaligned tail stays its own run so that only it is merged with what follows.
    if (start < r.end) out.push({ start, end: r.end, flags: r.flags });
  }
  const merged: Run[] = [];
  for (const r of out) push(merged, r);
  return merged;
}
