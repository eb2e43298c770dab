/** HTTP Range headers (RFC 9110 §14), pure: which bytes of a file a request asks for (static.ts). */

export interface ByteRange { start: number; end: number }

/**
 * Parse `bytes=a-b, c-, -n` against a file of `size` bytes.
 * - 'ignore': not a bytes range we honour (bad syntax, more than `maxRanges` ranges, or ranges that
 *   add up to more than the file, the overlap abuse RFC 9110 §14.2 warns of): answer 200 with the file;
 * - 'unsatisfiable': no range starts inside the file (416);
 * - otherwise the satisfiable ranges in request order, each clamped to the file.
 */
export function parseRanges(header: string | undefined, size: number, maxRanges: number): ByteRange[] | 'ignore' | 'unsatisfiable' {
  if (!header || header.length > 8192) return 'ignore';
  const m = /^\s*bytes\s*=(.*)$/i.exec(header);
  if (!m) return 'ignore';
  const specs = m[1].split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (specs.length === 0 || specs.length > maxRanges) return 'ignore';
  const out: ByteRange[] = [];
  let total = 0;
  for (const spec of specs) {
    const r = /^(\d{0,15})-(\d{0,15})$/.exec(spec);
    if (!r || (r[1] === '' && r[2] === '')) return 'ignore';
    let start: number;
    let end: number;
    if (r[1] === '') {
      const n = Number(r[2]);
      if (n === 0) continue;
      start = Math.max(0, size - n);
      end = size - 1;
    } else {
      start = Number(r[1]);
      end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1);
      if (r[2] !== '' && Number(r[2]) < start) return 'ignore';
    }
    if (start >= size) continue;
    out.push({ start, end });
    total += end - start + 1;
  }
  if (out.length === 0) return 'unsatisfiable';
  if (total > size) return 'ignore';
  return out;
}
