/**
 * Published applications as desktop menu entries (freedesktop Desktop Entry spec 1.5):
 * `<dir>/medv-<instance>-<slug>.desktop`, each running its application with
 * `<medv> workspace run --client-root <root> --display window <workspace> <app>` (which starts the
 * workspace if needed, in a window) and marked `X-Medv-Instance=<instance>`,
 * so that removal touches only entries medv wrote for that workspace of that client root and
 * user. The instance id is src/workspace's instanceName (workspace name and a hash of client root,
 * user and workspace): two client roots, or two users of one root, never replace each other's
 * entries, and an entry always starts the workspace of the root it was written for.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { checkAppName, checkVmName, checkWorkspaceName } from '../api/names.js';
import { ensureDir, readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { desktopDir } from '../core/paths.js';

/** A policy's published application (src/api/policy-schema.ts): `name` by the name rules, `argv` run in the guest. */
export interface PublishedApp { name: string; title?: string; argv: string[]; icon?: string }

/** One workspace of one client root and user: whose entries these are. */
export interface DesktopInstance {
  /** Unique per (client root, user, workspace); the stem of the file names (VM-name rules). */
  id: string;
  workspace: string;
  /** The client root the entries start the workspace from (absolute). */
  clientRoot: string;
}

const MAX_APPS = 256;
const MAX_ENTRY = 64 * 1024;
const NAME_MAX = 128;
const FIELD_MAX = 4096;

function checkInstance(i: DesktopInstance): void {
  checkVmName(i?.id, 'desktop entry id');
  checkWorkspaceName(i.workspace, 'workspace name');
  if (typeof i.clientRoot !== 'string' || !i.clientRoot.startsWith('/') || /[\u0000-\u001f]/.test(i.clientRoot)) throw new MedvError('EINVAL_ARG', 'the client root of a desktop entry must be an absolute path without control characters');
}

/** Control characters out, length bounded: what a name or field may hold before escaping. */
function clean(s: string, max: number): string {
  // eslint-disable-next-line no-control-regex
  return String(s).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ').trim().slice(0, max);
}

/** A value of type string/localestring: backslash escapes of the spec (\\ \s at the start \n \t \r). */
function escapeValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\t/g, '\\t').replace(/\r/g, '\\r').replace(/^ /, '\\s');
}

/**
 * One Exec argument (Desktop Entry spec 1.5, "The Exec key"): quoted when it holds a reserved
 * character (space, tab, newline, `"'\><~|&;$*?#()` and backquote) or `=` (reserved in the first
 * argument) or is empty; inside quotes `"`, `` ` ``, `$` and `\` are backslash-escaped; `%` is
 * doubled (field codes), quoted or not. The result is then a string value, escaped again by
 * escapeValue when written (so a `\` in an argument is `\\\\` in the file).
 */
export function quoteExecArg(arg: string): string {
  const a = arg.replace(/%/g, '%%');
  if (a !== '' && !/[\s"'\\><~|&;$*?#()`=]/.test(a)) return a;
  return `"${a.replace(/["`$\\]/g, (ch) => `\\${ch}`)}"`;
}

/** A file-name slug: lower-case letters, digits and '-', at most 40, never empty. */
export function slugOf(name: string): string {
  const s = clean(name, NAME_MAX).toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '');
  return s || 'app';
}

const MARK = 'X-Medv-Instance';

/** Is `file` (a regular file, not a symlink) a desktop entry medv wrote for instance `id`? */
function isOurs(file: string, id: string): boolean {
  let bytes: Buffer | undefined;
  try { bytes = readBoundedSync(file, MAX_ENTRY, 'desktop entry'); } catch { return false; }
  if (!bytes) return false;
  return bytes.toString('utf8').split('\n').some((l) => l.replace(/\r$/, '') === `${MARK}=${id}`);
}

function listOurs(dir: string, id: string): string[] {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  const prefix = `medv-${id}-`;
  return names.filter((n) => n.startsWith(prefix) && n.endsWith('.desktop')).map((n) => join(dir, n)).filter((p) => isOurs(p, id)).sort();
}

/**
 * Write one entry per app (medv-<id>-<slug>.desktop; slugs made unique with -2, -3 …), remove
 * this instance's other entries, return the paths written. An existing file under one of our names
 * that medv did not write for this instance is EEXIST, untouched.
 */
export function writeDesktopEntries(instance: DesktopInstance, apps: PublishedApp[], o: { medv: string; dir?: string }): string[] {
  checkInstance(instance);
  const { id, workspace } = instance;
  if (!Array.isArray(apps) || apps.length > MAX_APPS) throw new MedvError('EINVAL_ARG', `at most ${MAX_APPS} published applications`);
  if (typeof o.medv !== 'string' || o.medv === '' || /[\u0000-\u001f]/.test(o.medv)) throw new MedvError('EINVAL_ARG', 'the medv command path must be a non-empty string without control characters');
  const dir = o.dir ?? desktopDir();
  // Ours, not a symlink, not writable by others (a group-writable one is common where each user has
  // a private group: allowed).
  ensureDir(dir, { parents: true, forbid: 0o002 });
  const used = new Set<string>();
  const planned: Array<{ path: string; text: string }> = [];
  for (const app of apps) {
    if (!app || !Array.isArray(app.argv)) throw new MedvError('EINVAL_ARG', 'a published application needs a name and an argv');
    checkAppName(app.name, 'published application name');
    const name = clean(app.title ?? app.name, NAME_MAX) || app.name;
    let slug = slugOf(app.name);
    for (let i = 2; used.has(slug); i++) slug = `${slugOf(app.name)}-${i}`;
    used.add(slug);
    const path = join(dir, `medv-${id}-${slug}.desktop`);
    const exec = [o.medv, 'workspace', 'run', '--client-root', instance.clientRoot, '--display', 'window', workspace, app.name].map(quoteExecArg).join(' ');
    const lines = [
      '[Desktop Entry]',
      'Type=Application',
      'Version=1.5',
      `Name=${escapeValue(name)}`,
      `Comment=${escapeValue(clean(`${name} (medv workspace ${workspace})`, FIELD_MAX))}`,
      `Exec=${escapeValue(exec)}`,
      'Terminal=false',
      'Categories=Utility;',
    ];
    if (app.icon !== undefined) {
      const icon = clean(app.icon, FIELD_MAX);
      if (icon) lines.push(`Icon=${escapeValue(icon)}`);
    }
    lines.push(`${MARK}=${id}`, `X-Medv-Workspace=${workspace}`, `X-Medv-Application=${app.name}`, '');
    planned.push({ path, text: lines.join('\n') });
  }
  for (const p of planned) {
    if (fs.existsSync(p.path) || isSymlink(p.path)) {
      if (!isOurs(p.path, id)) throw new MedvError('EEXIST', `${p.path} exists and was not written by medv for workspace ${workspace} of this client root; not replaced`, { file: p.path });
    }
  }
  const written: string[] = [];
  for (const p of planned) {
    writeFileAtomicSync(p.path, Buffer.from(p.text, 'utf8'), { mode: 0o644 });
    written.push(p.path);
  }
  const keep = new Set(written);
  for (const stale of listOurs(dir, id)) if (!keep.has(stale)) fs.rmSync(stale, { force: true });
  return written;
}

function isSymlink(p: string): boolean {
  try { return fs.lstatSync(p).isSymbolicLink(); } catch { return false; }
}

/** Remove this instance's entries: files medv-<id>-*.desktop that carry X-Medv-Instance=<id>. */
export function removeDesktopEntries(instance: DesktopInstance, o: { dir?: string } = {}): string[] {
  checkInstance(instance);
  const dir = o.dir ?? desktopDir();
  const removed: string[] = [];
  for (const p of listOurs(dir, instance.id)) {
    fs.rmSync(p, { force: true });
    removed.push(p);
  }
  return removed;
}
