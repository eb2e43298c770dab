/**
 * What a repository file is, judged from its bytes: a pack's header, or an index's header (its
 * signature checked against the signer it names, its length against its header). The server runs
 * this on every completed upload before publishing it; prune runs it before deleting anything.
 * It does not decide whether the signer is trusted (clients do, with their keys).
 */
import * as fs from 'node:fs';
import { MedvError, fromSystemError } from '../core/errors.js';
import {
  INDEX_MAX_HEADER, PACK_HEADER_SIZE, type PackRef, indexFileLength, parseIndexHeader, parsePackHeader,
} from '../formats/ckm/index.js';
import { verifyIndexSignature } from '../pack/indexfile.js';
import { type RepoFileName, parseRepoFileName } from '../api/names.js';

export interface InspectedFile extends RepoFileName {
  size: number;
  imageId: Buffer;
  /** A pack's salt (the one its indexes name). */
  salt?: Buffer;
  /** An index's packs, signer (Ed25519 public key) and creation time (Unix seconds). */
  packs?: PackRef[];
  signer?: Buffer;
  created?: number;
}

/**
 * Read and check the header of the file at `path`, published (or to be published) as `file`.
 * Throws EINVAL_ARG for a name that is not a repository file name, EFORMAT / ETRUNCATED /
 * ESIGNATURE / ECORRUPT for content that does not match it.
 */
export async function inspectRepoFile(path: string, file: string): Promise<InspectedFile> {
  const named = parseRepoFileName(file);
  if (!named) throw new MedvError('EINVAL_ARG', `${JSON.stringify(file)} is not a repository file name (<NAME>_<N>.ckm or <NAME>_<N>.ckm.index)`, { file });
  let fh: fs.promises.FileHandle | undefined;
  try {
    // O_NOFOLLOW: a symlink is never taken for the file it points to
    fh = await fs.promises.open(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const st = await fh.stat();
    if (!st.isFile()) throw new MedvError('EINVAL_ARG', 'not a regular file', { file: path });
    const ctx = { file };
    if (named.kind === 'pack') {
      const head = Buffer.alloc(PACK_HEADER_SIZE);
      const { bytesRead } = await fh.read(head, 0, head.length, 0);
      const h = parsePackHeader(head.subarray(0, bytesRead), ctx);
      if (h.version !== named.version) throw new MedvError('EFORMAT', `pack header says version ${h.version}, its name says ${named.version}`, { file, offset: 12 });
      return { ...named, size: st.size, imageId: h.imageId, salt: h.salt };
    }
    const head = Buffer.alloc(Math.min(st.size, INDEX_MAX_HEADER));
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const h = parseIndexHeader(head.subarray(0, bytesRead), ctx);
    if (h.name !== named.name || h.version !== named.version) {
      throw new MedvError('EFORMAT', `index header names ${h.name} version ${h.version}, its file name ${named.name} version ${named.version}`, { file, offset: 20 });
    }
    verifyIndexSignature(h, [h.signer], file);
    const expected = indexFileLength(h);
    if (st.size < expected) throw new MedvError('ETRUNCATED', `index is ${st.size} bytes, its header says ${expected}`, { file, offset: st.size });
    if (st.size > expected) throw new MedvError('ECORRUPT', `index has ${st.size - expected} bytes past its end`, { file, offset: expected });
    return { ...named, size: st.size, imageId: h.imageId, packs: h.packs, signer: h.signer, created: h.created };
  } catch (e) {
    if (e instanceof MedvError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new MedvError('EINVAL_ARG', 'is a symbolic link', { file: path });
    throw fromSystemError(e, path);
  } finally {
    await fh?.close().catch(() => undefined);
  }
}
