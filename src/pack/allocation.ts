/**
 * A device's allocation map, read ahead in large windows: which parts of a range hold data and
 * which read as zeros (an unallocated block of a dynamic VHD, a hole of a sparse raw file), so the
 * packer reads only data. A device without extents() is all data. Asked for ranges in ascending
 * order (one run after the other); memory: the extents of one window.
 */
import type { BlockDevice } from '../block/device.js';

/** How far ahead the map is asked for at once. */
const WINDOW = 1 << 30;

interface Segment { start: number; end: number; zero: boolean }

export class AllocationMap {
  private segs: Segment[] = [];
  private first = 0;
  /** The map is known up to here. */
  private known = 0;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly device: BlockDevice) {}

  /**
   * The data of [offset, offset + length) as [start, end) byte ranges, ascending and merged: none
   * when all of it reads as zeros, one covering all of it for a device without a map. Calls must
   * ask for ascending ranges; they are answered in the order made.
   */
  dataIn(offset: number, length: number): Promise<Array<[number, number]>> {
    const p = this.chain.then(() => this.answer(offset, length));
    this.chain = p.catch(() => undefined);
    return p;
  }

  /**
   * Does the map already known say all of [offset, offset + length) reads as zeros? Synchronous, and
   * false when it does not know yet (dataIn finds out).
   */
  knownZero(offset: number, length: number): boolean {
    const end = offset + length;
    if (!this.device.extents || end > this.known || this.first >= this.segs.length || offset < this.segs[this.first].start) return false;
    // the segments are contiguous from segs[first] to `known`: find the one holding `offset`
    let lo = this.first;
    let hi = this.segs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.segs[mid].end <= offset) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.segs.length && this.segs[i].start < end; i++) if (!this.segs[i].zero) return false;
    return true;
  }

  private async answer(offset: number, length: number): Promise<Array<[number, number]>> {
    const end = offset + length;
    if (!this.device.extents) return [[offset, end]];
    if (this.known < offset) this.known = offset;
    while (this.known < end) await this.more(end);
    while (this.first < this.segs.length && this.segs[this.first].end <= offset) this.first++;
    if (this.first > 1024) { this.segs = this.segs.slice(this.first); this.first = 0; }
    const out: Array<[number, number]> = [];
    for (let i = this.first; i < this.segs.length && this.segs[i].start < end; i++) {
      const s = this.segs[i];
      if (s.zero) continue;
      const a = Math.max(s.start, offset);
      const b = Math.min(s.end, end);
      const last = out[out.length - 1];
      if (last && last[1] === a) last[1] = b;
      else out.push([a, b]);
    }
    return out;
  }

  private async more(need: number): Promise<void> {
    const at = this.known;
    const len = Math.max(need - at, Math.min(WINDOW, this.device.size - at));
    const list = await this.device.extents!(at, len);
    let pos = at;
    for (const e of list) {
      if (!(e.length > 0)) break;
      const stop = Math.min(pos + e.length, at + len);
      this.segs.push({ start: pos, end: stop, zero: e.zero });
      pos = stop;
      if (pos >= at + len) break;
    }
    // a device that answers nothing for a range: treat what was needed as data
    if (pos === at) { this.segs.push({ start: at, end: need, zero: false }); pos = need; }
    this.known = pos;
  }
}
