/**
 * File names of a repository: `<NAME>_<N>.ckm` (pack) and `<NAME>_<N>.ckm.index` (index).
 * Pure: what the server serves and accepts, and what prune may touch, are decided here and only here.
 */
import { CKM_MAX_VERSION, IMAGE_NAME_RE } from '../formats/ckm/index.js';

export type RepoFileKind = 'pack' | 'index';

export interface RepoFileName {
  file: string;
  name: string;
  version: number;
  kind: RepoFileKind;
}

/** Every character a repository file name may hold; nothing that needs percent-encoding in a URL. */
const FILE_RE = /^([A-Za-z0-9][A-Za-z0-9._-]{0,63})_([1-9][0-9]{0,9})\.ckm(\.index)?$/;

/**
 * Parse a repository file name; undefined for anything else (dotfiles, `..`, slashes, percent
 * signs, NUL, names of more than 64 characters, version 0 or leading zeros, versions past 2^31-1).
 */
export function parseRepoFileName(file: string): RepoFileName | undefined {
  if (typeof file !== 'string' || file.length > 64 + 1 + 10 + 10) return undefined;
  const m = FILE_RE.exec(file);
  if (!m || !IMAGE_NAME_RE.test(m[1])) return undefined;
  const version = Number(m[2]);
  if (version > CKM_MAX_VERSION) return undefined;
  return { file, name: m[1], version, kind: m[3] ? 'index' : 'pack' };
}

/** Repository file names of image `name`, as `parseRepoFileName` reads them. */
export function isFileOfImage(file: string, name: string): RepoFileName | undefined {
  const f = parseRepoFileName(file);
  return f && f.name === name ? f : undefined;
}
