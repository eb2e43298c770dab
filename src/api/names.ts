/**
 * Every name rule of medv, in one place: what the server accepts, what the policy schema
 * (./policy-schema.ts, docs/policy.schema.json) allows, and what the client makes of a name
 * (folders, VM names, run folders, desktop entries) are the same rules, so a name that passes one
 * passes all (test/api/names.test.ts checks it end to end).
 *
 *   user, group, policy   1-64 of A-Z a-z 0-9 . _ @ -, starting with a letter or digit
 *                         ('@': e-mail-like user names). A user name becomes data/Users/<user>.
 *   workspace, VM         1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit: a workspace
 *                         name is its VM's name, its run folder's name and part of its desktop
 *                         entries' file names, so no '@' (or anything else a path, a URL or a
 *                         desktop entry would have to escape).
 *   application           as a workspace name: a published application's name in the policy, the
 *                         APP of `medv workspace run WORKSPACE APP` and part of its menu entry's
 *                         `Exec=` line (its menu label is the application's `title`, free text).
 *   image                 as a workspace name (it makes `<image>_<N>.ckm`): src/formats/ckm's
 *                         IMAGE_NAME_RE, the one definition.
 *   client id             1-64 of A-Z a-z 0-9 . _ - (what `medv login` makes: 16 hex digits).
 *   repository files      `<image>_<N>.ckm` (pack) and `<image>_<N>.ckm.index` (index): what the
 *                         server serves and accepts, what prune may touch and what upload sends
 *                         are decided here and only here.
 *
 * None of them can be '.', '..', empty, hold a '/', a NUL or a control character.
 */
import { MedvError } from '../core/errors.js';
import { CKM_MAX_VERSION, IMAGE_NAME_RE, checkImageName } from '../formats/ckm/common.js';

/** Image names: the one definition is src/formats/ckm's (a pure format module may not import api/). */
export { IMAGE_NAME_RE, checkImageName };

/** User, group and policy names (JSON Schema pattern text, and the RegExp). */
export const PRINCIPAL_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$';
export const PRINCIPAL_NAME_RE = new RegExp(PRINCIPAL_NAME_PATTERN);

/** Workspace names, which are also VM names. */
export const WORKSPACE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
export const WORKSPACE_NAME_RE = new RegExp(WORKSPACE_NAME_PATTERN);
/** VM names (`medv vm start --name`, run folders): the workspace rule. */
export const VM_NAME_RE = WORKSPACE_NAME_RE;

/** Published application names: the workspace rule. */
export const APP_NAME_PATTERN = WORKSPACE_NAME_PATTERN;
export const APP_NAME_RE = WORKSPACE_NAME_RE;

/** Image names as a JSON Schema pattern (IMAGE_NAME_RE's text). */
export const IMAGE_NAME_PATTERN = IMAGE_NAME_RE.source;

/** Client ids. */
export const CLIENT_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

const show = (v: unknown) => (JSON.stringify(v) ?? String(v)).slice(0, 80);

function check(v: unknown, re: RegExp, what: string, allowed: string): string {
  if (typeof v !== 'string' || !re.test(v)) throw new MedvError('EINVAL_ARG', `${what} must be 1 to 64 ${allowed}, not ${show(v)}`);
  return v;
}

const START = ' (starting with a letter or digit)';

/** A user name (`what` names the field in the message). EINVAL_ARG otherwise. */
export function checkUserName(v: unknown, what = 'user'): string {
  return check(v, PRINCIPAL_NAME_RE, what, `letters, digits, '.', '_', '@' or '-'${START}`);
}

/** A group name. */
export function checkGroupName(v: unknown, what = 'group'): string {
  return checkUserName(v, what);
}

/** A workspace name. */
export function checkWorkspaceName(v: unknown, what = 'workspace'): string {
  return check(v, WORKSPACE_NAME_RE, what, `letters, digits, '.', '_' or '-'${START}`);
}

/** A VM name. */
export function checkVmName(v: unknown, what = 'VM name'): string {
  return check(v, VM_NAME_RE, what, `letters, digits, '.', '_' or '-'${START}`);
}

/** A published application's name. */
export function checkAppName(v: unknown, what = 'application'): string {
  return check(v, APP_NAME_RE, what, `letters, digits, '.', '_' or '-'${START}`);
}

/** A client id. */
export function checkClientId(v: unknown, what = 'client'): string {
  return check(v, CLIENT_ID_RE, what, "letters, digits, '.', '_' or '-'");
}

// --- repository file names

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
