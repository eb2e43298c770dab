/**
 * Image mirrors: plain static copies of a repository's packs (a branch nginx, a CDN, an object
 * store's public URL) tried in order before the server. A mirror needs no trust: the index (and
 * its signature) comes from the server, and every block a mirror delivers is authenticated and
 * checked against its id by the caller's sink before it is written. So whatever a mirror does
 * (wrong bytes, 404, 5xx, a redirect, a stall, a file of another length, a changing ETag) only
 * sends the pieces it did not deliver to the next source, with one warning line; the server is
 * the last source, and its failure is the fetch's.
 */
import { MedvError } from '../core/errors.js';
import type { Span } from './plan.js';
import type { PieceSink, RemoteFile } from './remote.js';

export { MAX_MIRRORS, checkMirrorUrl, checkMirrorUrls } from '../api/mirrors.js';

/** An error thrown by the caller's sink for a reason other than the bytes it was given: not the source's fault. */
class SinkFailure extends Error {
  constructor(readonly inner: unknown) { super('sink failure'); }
}

/** Mirrors that failed during one fetch: not asked again (404 excepted: that file only). */
export class MirrorState {
  readonly dropped = new Set<string>();
}

/**
 * One pack file from the first source that delivers it: each mirror's copy in order (those not
 * dropped), then the server's. Each source is asked only for the pieces the ones before it did
 * not deliver.
 */
export class MirroredFile implements RemoteFile {
  constructor(
    private readonly mirrors: Array<{ base: string; file: RemoteFile }>,
    private readonly server: RemoteFile,
    private readonly state: MirrorState,
    private readonly warn: (m: string) => void,
  ) {}

  get name(): string { return this.server.name; }

  readHead(n: number): Promise<{ data: Buffer; size: number }> { return this.server.readHead(n); }

  sibling(name: string): RemoteFile { return this.server.sibling(name); }

  async fetch<P extends Span>(pieces: P[], size: number, sink: PieceSink<P>): Promise<void> {
    const left = new Set(pieces);
    const guarded: PieceSink<P> = async (p, data) => {
      if (!left.has(p)) return;
      try {
        await sink(p, data);
      } catch (e) {
        // bytes that fail their check are the source's fault; anything else (a write) is ours
        if (e instanceof MedvError && e.code === 'EBADBLOCK') throw e;
        throw new SinkFailure(e);
      }
      left.delete(p);
    };
    for (const m of this.mirrors) {
      if (left.size === 0) return;
      if (this.state.dropped.has(m.base)) continue;
      try {
        await m.file.fetch([...left], size, guarded);
      } catch (e) {
        if (e instanceof SinkFailure) throw e.inner;
        const notThere = e instanceof MedvError && e.code === 'EHTTP' && (e.data.status === 404 || e.data.status === 410);
        if (!notThere) this.state.dropped.add(m.base);
        const reason = e instanceof MedvError ? `${e.message} [${e.code}]` : String(e);
        this.warn(`mirror ${m.base}: ${reason}; ${left.size} piece${left.size === 1 ? '' : 's'} of ${this.server.name.split('/').pop()} from the next source${notThere ? '' : ' (this mirror is not used again in this fetch)'}`);
      }
    }
    if (left.size === 0) return;
    try {
      await this.server.fetch([...left], size, guarded);
    } catch (e) {
      throw e instanceof SinkFailure ? e.inner : e;
    }
  }
}
