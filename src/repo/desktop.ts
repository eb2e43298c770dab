/**
 * Published applications as desktop menu entries (freedesktop Desktop Entry spec 1.5):
 * `<dir>/medv-<workspace>-<slug>.desktop`, each starting its workspace with
 * `<medv> workspace start <workspace>` and marked `X-Medv-Workspace=<workspace>`, so that removal
 * touches only entries medv wrote for that workspace.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { xdgDataHome } from './paths.js';

export interface PublishedApp { name: string; command: string; icon?: string }

const WORKSPACE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_APPS = 256;
const MAX_ENTRY = 64 * 1024;
const NAME_MAX = 128;
const FIELD_MAX = 4096;

/** $XDG_DATA_HOME/applications (default ~/.local/share/applications). */
export function desktopDir(): string {
  return join(xdgDataHome(), 'applications');
}

function checkWorkspace(ws: string): void {
  if (typeof ws !== 'string' || !WORKSPACE_RE.test(ws)) {
    throw new MedvError('EINVAL_ARG', `workspace name ${JSON.stringify(String(ws).slice(0, 80))} must be 1-64 of A-Z a-z 0-9 . _ - and start with a letter or digit`);
  }
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
 * One Exec argument: quoted when it holds a reserved character; inside quotes `"`, `` ` ``, `$`
 * and `\` are backslash-escaped; `%` is doubled (field codes). The result is then a string value,
 * escaped again by escapeValue when written.
 */
export function quoteExecArg(arg: string): string {
  const a = arg.replace(/%/g, '%%');
  if (a !== '' && !/[\s"'\\><~|&;$*?#()`]/.test(a)) return a;
  return `"${a.replace(/["`$\\]/g, (ch) => `\\${ch}`)}"`;
}

/** A file-name slug: lower-case letters, digits and '-', at most 40, never empty. */
export function slugOf(name: string): string {
  const s = clean(name, NAME_MAX).toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40).replace(/-+$/, '');
  return s || 'app';
}

const MARK = 'X-Medv-Workspace';

/** Is `file` (a regular file, not a symlink) a desktop entry medv wrote for `workspace`? */
function isOurs(file: string, workspace: string): boolean {
  let bytes: Buffer | undefined;
  try { bytes = readBoundedSync(file, MAX_ENTRY, 'desktop entry'); } catch { return false; }
  if (!bytes) return false;
  return bytes.toString('utf8').split('\n').some((l) => l.replace(/\r$/, '') === `${MARK}=${workspace}`);
}

function listOurs(dir: string, workspace: string): string[] {
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return []; }
  const prefix = `medv-${workspace}-`;
  return names.filter((n) => n.startsWith(prefix) && n.endsWith('.desktop')).map((n) => join(dir, n)).filter((p) => isOurs(p, workspace)).sort();
}

/**
 * Write one entry per app (medv-<workspace>-<slug>.desktop; slugs made unique with -2, -3 …),
 * remove this workspace's other entries, return the paths written. An existing file under one of
 * our names that medv did not write for this workspace is EEXIST, untouched.
 */
export function writeDesktopEntries(workspace: string, apps: PublishedApp[], o: { medv: string; dir?: string }): string[] {
  checkWorkspace(workspace);
  if (!Array.isArray(apps) || apps.length > MAX_APPS) throw new MedvError('EINVAL_ARG', `at most ${MAX_APPS} published applications`);
  if (typeof o.medv !== 'string' || o.medv === '' || /[\u0000-\u001f]/.test(o.medv)) throw new MedvError('EINVAL_ARG', 'the medv command path must be a non-empty string without control characters');
  const dir = o.dir ?? desktopDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new MedvError('EUNSAFE', `${dir} is not a folder (a symlink or a file is there)`, { file: dir });
  const used = new Set<string>();
  const planned: Array<{ path: string; text: string }> = [];
  for (const app of apps) {
    if (!app || typeof app.name !== 'string' || typeof app.command !== 'string') throw new MedvError('EINVAL_ARG', 'a published application needs a name and a command');
    const name = clean(app.name, NAME_MAX) || 'Application';
    let slug = slugOf(name);
    for (let i = 2; used.has(slug); i++) slug = `${slugOf(name)}-${i}`;
    used.add(slug);
    const path = join(dir, `medv-${workspace}-${slug}.desktop`);
    const exec = [o.medv, 'workspace', 'start', workspace].map(quoteExecArg).join(' ');
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
    lines.push(`${MARK}=${workspace}`, `X-Medv-Command=${escapeValue(clean(app.command, FIELD_MAX))}`, '');
    planned.push({ path, text: lines.join('\n') });
  }
  for (const p of planned) {
    if (fs.existsSync(p.path) || isSymlink(p.path)) {
      if (!isOurs(p.path, workspace)) throw new MedvError('EEXIST', `${p.path} exists and was not written by medv for workspace ${workspace}; not replaced`, { file: p.path });
    }
  }
  const written: string[] = [];
  for (const p of planned) {
    writeFileAtomicSync(p.path, Buffer.from(p.text, 'utf8'), { mode: 0o644 });
    written.push(p.path);
  }
  const keep = new Set(written);
  for (const stale of listOurs(dir, workspace)) if (!keep.has(stale)) fs.rmSync(stale, { force: true });
  return written;
}

function isSymlink(p: string): boolean {
  try { return fs.lstatSync(p).isSymbolicLink(); } catch { return false; }
}

/** Remove this workspace's entries: files medv-<workspace>-*.desktop that carry X-Medv-Workspace=<workspace>. */
export function removeDesktopEntries(workspace: string, o: { dir?: string } = {}): string[] {
  checkWorkspace(workspace);
  const dir = o.dir ?? desktopDir();
  const removed: string[] = [];
  for (const p of listOurs(dir, workspace)) {
    fs.rmSync(p, { force: true });
    removed.push(p);
  }
  return removed;
}
