/**
 * The policy editor's form, both ways (pure): a document → the values of the form's fields for
 * one workspace entry, and the submitted fields + the document they edit → a new document. Values
 * are carried as typed: a number field holding "abc" stays a string, so the schema (src/api/policy.ts)
 * refuses it and names its JSON path, which `fieldFor` maps back to the field to show the error at.
 * Whatever the form does not show (other workspaces, a memory table) is kept from the base document.
 */
export type Doc = Record<string, unknown>;
type Ws = Record<string, unknown>;

export const DEVICES = ['usb', 'cdrom', 'clipboard', 'sharedFolders'] as const;

/** The form's values (strings and booleans) for workspace `ws` of `doc`. */
export interface FormValues {
  name: string; description: string; users: string; groups: string; ws: number;
  ws_name: string; ws_image: string; ws_mode: string; ws_onStop: string; ws_memory: string; memoryTable: boolean; ws_network: string;
  devices: Record<string, boolean>; ws_offlineDays: string; ws_expires: string; ws_versionsToKeep: string; ws_suggestUpdate: boolean;
  ws_useTrimTransfer: boolean; ws_diskBus: string; ws_nic: string; ws_minEngine: string; ws_applications: string;
}

const str = (v: unknown) => (v === undefined || v === null ? '' : typeof v === 'string' ? v : JSON.stringify(v));
const list = (v: unknown) => (Array.isArray(v) ? v.map(str).join('\n') : str(v));
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function workspacesOf(doc: Doc): Ws[] {
  return Array.isArray(doc.workspaces) ? (doc.workspaces as unknown[]).map((w) => (isObject(w) ? w : {})) : [];
}

export function toForm(doc: Doc, ws: number): FormValues {
  const w = workspacesOf(doc)[ws] ?? {};
  const hw = isObject(w.hardware) ? w.hardware : {};
  const dev = isObject(w.devices) ? w.devices : {};
  const apps = Array.isArray(w.applications) ? (w.applications as unknown[]).filter(isObject) : [];
  return {
    name: str(doc.name), description: str(doc.description), users: list(doc.users), groups: list(doc.groups), ws,
    ws_name: str(w.name), ws_image: str(w.image), ws_mode: str(w.mode), ws_onStop: str(w.onStop),
    ws_memory: isObject(w.memory) ? '' : str(w.memory), memoryTable: isObject(w.memory), ws_network: str(w.network),
    devices: Object.fromEntries(DEVICES.map((d) => [d, dev[d] === true])),
    ws_offlineDays: str(w.offlineDays), ws_expires: str(w.expires), ws_versionsToKeep: str(w.versionsToKeep),
    ws_suggestUpdate: w.suggestUpdate !== false, ws_useTrimTransfer: w.useTrimTransfer !== false,
    ws_diskBus: str(hw.diskBus), ws_nic: str(hw.nic), ws_minEngine: str(w.minEngine),
    ws_applications: apps.map((a) => [str(a.name), str(a.command), ...(a.icon !== undefined ? [str(a.icon)] : [])].join(' | ')).join('\n'),
  };
}

/** A whole number as a number; anything else as typed (the schema names the field); empty: absent. */
function number(v: string | null): unknown {
  const t = (v ?? '').trim();
  if (t === '') return undefined;
  return /^-?[0-9]{1,15}$/.test(t) ? Number(t) : t;
}

function names(v: string | null): string[] | undefined {
  const xs = (v ?? '').split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
  return xs.length ? xs : undefined;
}

function set(o: Record<string, unknown>, k: string, v: unknown): void {
  if (v === undefined || v === '') delete o[k];
  else o[k] = v;
}

/** The document the form describes: `base` with the form's fields applied to workspace `ws`. */
export function fromForm(f: URLSearchParams, base: Doc): Doc {
  const doc: Doc = structuredClone(base);
  set(doc, 'name', (f.get('name') ?? '').trim());
  set(doc, 'description', f.get('description') ?? '');
  set(doc, 'users', names(f.get('users')));
  set(doc, 'groups', names(f.get('groups')));
  const all = workspacesOf(doc);
  const i = Math.max(0, Math.min(all.length, Number(f.get('ws') ?? 0) || 0));
  const w: Ws = structuredClone(all[i] ?? {});
  for (const k of ['name', 'image', 'mode', 'onStop', 'network', 'expires', 'minEngine']) set(w, k, (f.get(`ws_${k}`) ?? '').trim());
  if (f.get('memoryTable') !== '1') set(w, 'memory', number(f.get('ws_memory')));
  for (const k of ['offlineDays', 'versionsToKeep']) set(w, k, number(f.get(`ws_${k}`)));
  // these default to true: an absent key stays absent unless the box is cleared
  for (const k of ['suggestUpdate', 'useTrimTransfer']) {
    const on = f.get(`ws_${k}`) === 'on';
    if (on && !(k in w)) continue;
    w[k] = on;
  }
  const devices = Object.fromEntries(DEVICES.filter((d) => f.get(`dev_${d}`) === 'on').map((d) => [d, true]));
  set(w, 'devices', Object.keys(devices).length ? devices : undefined);
  const hw: Record<string, unknown> = {};
  set(hw, 'diskBus', (f.get('ws_diskBus') ?? '').trim());
  set(hw, 'nic', (f.get('ws_nic') ?? '').trim());
  set(w, 'hardware', Object.keys(hw).length ? hw : undefined);
  const apps = (f.get('ws_applications') ?? '').split(/\r?\n/).map((l) => l.trim()).filter(Boolean).map((l) => {
    const [name, command, icon] = l.split('|').map((s) => s.trim());
    return { name: name ?? '', command: command ?? '', ...(icon ? { icon } : {}) };
  });
  set(w, 'applications', apps.length ? apps : undefined);
  all[i] = w;
  doc.workspaces = all;
  return doc;
}

/**
 * The form field an error at JSON pointer `path` belongs to, when the form shows it (workspace
 * `ws` and the policy's own fields); undefined: the JSON editor shows it.
 */
export function fieldFor(path: string, ws: number): string | undefined {
  const top = /^\/(name|description|users|groups)(\/|$)/.exec(path);
  if (top) return top[1];
  const m = /^\/workspaces\/(\d+)\/([^/]+)/.exec(path);
  if (!m || Number(m[1]) !== ws) return undefined;
  const k = m[2];
  if (k === 'devices') return 'devices';
  if (k === 'hardware') return /\/nic/.test(path) ? 'ws_nic' : 'ws_diskBus';
  return ['name', 'image', 'mode', 'onStop', 'memory', 'network', 'offlineDays', 'expires', 'versionsToKeep', 'suggestUpdate', 'useTrimTransfer', 'minEngine', 'applications'].includes(k) ? `ws_${k}` : undefined;
}
