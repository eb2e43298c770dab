/**
 * Virtual PC `.vmc` settings files: parse into a typed VmcSettings record, modify the parsed tree,
 * write it back as Virtual PC writes it (UTF-16LE with a byte-order mark, CRLF, `<preferences>`
 * root, typed leaf elements). Everything the record does not map stays in the tree, so unknown
 * elements and attributes survive a read/modify/write. Pure: no I/O. See README.md.
 */
import { MedvError } from '../../core/errors.js';
import { type DecodedText, type XmlEncoding, type XmlSource, decodeXmlBytes, encodeUtf16leBom } from './text.js';
import {
  type XmlDocument, type XmlElement, type XmlLimits, DEFAULT_XML_LIMITS, attr, childElements, cloneDocument,
  newElement, parseXmlTree, sameElement, serializeXmlTree, setAttr, setText, textOf,
} from './xmltree.js';
import type { WindowsPathRef } from './paths.js';

/** Memory sizes (MB) we accept, in a .vmc and in ImageState.xml. */
export const MEMORY_MB_MIN = 4;
export const MEMORY_MB_MAX = 1024 * 1024;
/** Video memory sizes (MB). */
export const VRAM_MB_MIN = 1;
export const VRAM_MB_MAX = 1024;
/** IDE: two controllers (primary 0, secondary 1), two locations each (master 0, slave 1). */
export const IDE_CONTROLLERS = 2;
export const IDE_LOCATIONS = 2;
/** Network adapters Virtual PC offers at most (we accept up to 8). */
export const MAX_NETWORK_ADAPTERS = 8;

export type VmcDriveKind = 'none' | 'hard-disk' | 'cd-dvd';
/** `drive_type` values: 0 nothing attached, 1 hard disk, 2 CD/DVD drive. */
export const DRIVE_TYPE_CODES: Readonly<Record<VmcDriveKind, number>> = { 'none': 0, 'hard-disk': 1, 'cd-dvd': 2 };

export interface VmcDrive {
  /** `ide_controller/@id`: 0 primary, 1 secondary. */
  controller: number;
  /** `location/@id`: 0 master, 1 slave. */
  location: number;
  kind: VmcDriveKind;
  /** The hard disk (.vhd) or the CD/DVD image (.iso). */
  path?: WindowsPathRef;
  /** A CD/DVD drive bound to a host drive letter (`D`), instead of an image. */
  hostDrive?: string;
  /** The undo disk (.vud) of this hard disk, when Virtual PC recorded one. */
  undoPath?: WindowsPathRef;
}

export interface VmcNetworkAdapter {
  /** `ethernet_controller/@id`. */
  id: number;
  /** MAC address as `00:03:ff:12:34:56`; absent when the file has none yet (Virtual PC assigns one at first start). */
  mac?: string;
  /** `virtual_network/name` (e.g. `Shared Networking (NAT)` or a host adapter's name). */
  networkName?: string;
  /** `virtual_network/id` (bytes, hex). */
  networkId?: string;
}

export interface VmcSettings {
  /** `version` (Virtual PC 2004/2007 write `2.0`). */
  version?: string;
  /** `hardware/memory/ram_size`, MB. */
  memoryMB?: number;
  /** `hardware/pci_bus/video_adapter/vram_size`, MB. */
  videoMemoryMB?: number;
  /** Every IDE location the file mentions, ordered by controller then location. */
  drives: VmcDrive[];
  undo: {
    /** `settings/undo_drives/enabled`. */
    enabled: boolean;
    /** `settings/undo_drives/default_action`, kept as Virtual PC wrote it. */
    defaultAction?: number;
  };
  /** Network adapters in use (`controller_count` of them when the file says how many). */
  network: VmcNetworkAdapter[];
  /** `settings/configuration/saved_state/path`: the .vsv of a saved VM. */
  savedState?: WindowsPathRef;
}

export interface VmcDocument {
  tree: XmlDocument;
  settings: VmcSettings;
  /** Encoding the file was read in ('utf-16le' for a new document). */
  encoding: XmlEncoding;
  file?: string;
}

export const VMC_PATHS = {
  version: 'version',
  ramSize: 'hardware/memory/ram_size',
  vramSize: 'hardware/pci_bus/video_adapter/vram_size',
  ideAdapter: 'hardware/pci_bus/ide_adapter',
  ethernetAdapter: 'hardware/pci_bus/ethernet_adapter',
  undoDrives: 'settings/undo_drives',
  savedState: 'settings/configuration/saved_state/path',
} as const;

type LeafType = 'integer' | 'string' | 'boolean' | 'bytes';

/** Error helper: names the file, the element path and its byte offset. */
class Reader {
  constructor(readonly file: string | undefined) {}

  error(code: 'EFORMAT' | 'EUNSUPPORTED', path: string, msg: string, el?: XmlElement): MedvError {
    return new MedvError(code, `${path}: ${msg}`, { file: this.file, offset: el?.at, element: path });
  }

  /** The one child `name` (with `id` when given); duplicates must be identical. */
  one(parent: XmlElement | undefined, name: string, path: string, id?: string): XmlElement | undefined {
    if (!parent) return undefined;
    const all = childElements(parent, name).filter((e) => id === undefined || attr(e, 'id') === id);
    for (let i = 1; i < all.length; i++) {
      if (!sameElement(all[0], all[i])) throw this.error('EFORMAT', path, `duplicate <${name}${id !== undefined ? ` id="${id}"` : ''}> elements that disagree`, all[i]);
    }
    return all[0];
  }

  /** Walk a slash path from `from`, each step through one(). */
  at(from: XmlElement | undefined, rel: string, base = ''): XmlElement | undefined {
    let cur = from;
    let path = base;
    for (const step of rel.split('/')) {
      path = path ? `${path}/${step}` : step;
      cur = this.one(cur, step, path);
      if (!cur) return undefined;
    }
    return cur;
  }

  /** Text of a typed leaf, checking its `type` attribute and that it holds no elements. */
  leaf(el: XmlElement | undefined, type: LeafType, path: string): string | undefined {
    if (!el) return undefined;
    const t = attr(el, 'type');
    if (t !== undefined && t.toLowerCase() !== type) throw this.error('EFORMAT', path, `type is "${t}", expected "${type}"`, el);
    if (childElements(el).length) throw this.error('EFORMAT', path, `expected a ${type} value, found child elements`, el);
    return textOf(el);
  }

  integer(el: XmlElement | undefined, path: string, min: number, max: number): number | undefined {
    const s = this.leaf(el, 'integer', path)?.trim();
    if (s === undefined) return undefined;
    if (!/^[+-]?[0-9]{1,16}$/.test(s)) throw this.error('EFORMAT', path, `${JSON.stringify(s.slice(0, 40))} is not an integer`, el);
    const n = Number(s);
    if (n < min || n > max) throw this.error('EFORMAT', path, `${n} is outside ${min}..${max}`, el);
    return n;
  }

  boolean(el: XmlElement | undefined, path: string): boolean | undefined {
    const s = this.leaf(el, 'boolean', path)?.trim().toLowerCase();
    if (s === undefined) return undefined;
    if (s === 'true' || s === '1') return true;
    if (s === 'false' || s === '0') return false;
    throw this.error('EFORMAT', path, `${JSON.stringify(s.slice(0, 40))} is not a boolean`, el);
  }

  bytes(el: XmlElement | undefined, path: string): string | undefined {
    const s = this.leaf(el, 'bytes', path)?.trim();
    if (s === undefined || s === '') return undefined;
    if (!/^(?:[0-9a-fA-F]{2})+$/.test(s)) throw this.error('EFORMAT', path, `${JSON.stringify(s.slice(0, 40))} is not hex bytes`, el);
    return s.toLowerCase();
  }

  string(el: XmlElement | undefined, path: string): string | undefined {
    const s = this.leaf(el, 'string', path);
    return s === undefined || s === '' ? undefined : s;
  }

  pathRef(el: XmlElement | undefined, path: string): WindowsPathRef | undefined {
    if (!el) return undefined;
    const absolute = this.string(this.one(el, 'absolute', `${path}/absolute`), `${path}/absolute`);
    const relative = this.string(this.one(el, 'relative', `${path}/relative`), `${path}/relative`);
    if (absolute === undefined && relative === undefined) return undefined;
    const ref: WindowsPathRef = {};
    if (absolute !== undefined) ref.absolute = absolute;
    if (relative !== undefined) ref.relative = relative;
    return ref;
  }

  /** Children `name` grouped by a small integer `id` attribute in 0..limit-1; conflicting duplicates refused. */
  byId(parent: XmlElement | undefined, name: string, path: string, limit: number): Map<number, XmlElement> {
    const out = new Map<number, XmlElement>();
    if (!parent) return out;
    for (const el of childElements(parent, name)) {
      const id = attr(el, 'id');
      if (id === undefined || !/^[0-9]{1,3}$/.test(id.trim()) || Number(id) >= limit) {
        throw this.error('EFORMAT', `${path}/${name}`, `id ${id === undefined ? 'is missing' : `${JSON.stringify(id.slice(0, 20))} is not in 0..${limit - 1}`}`, el);
      }
      const n = Number(id);
      const prev = out.get(n);
      if (prev && !sameElement(prev, el)) throw this.error('EFORMAT', `${path}/${name}[@id=${n}]`, `duplicate <${name} id="${n}"> elements that disagree`, el);
      if (!prev) out.set(n, el);
    }
    return out;
  }
}

function formatMac(hex: string): string {
  return hex.match(/../g)!.join(':');
}

/** Read the typed settings out of a parsed `<preferences>` tree. */
export function readVmcSettings(tree: XmlDocument, file?: string): VmcSettings {
  const r = new Reader(file);
  const root = tree.root;
  if (root.name !== 'preferences') throw r.error('EFORMAT', root.name, 'root element is not <preferences>; not a Virtual PC .vmc file', root);
  const s: VmcSettings = { drives: [], undo: { enabled: false }, network: [] };

  const version = r.string(r.one(root, 'version', VMC_PATHS.version), VMC_PATHS.version);
  if (version !== undefined) s.version = version;
  const mem = r.integer(r.at(root, VMC_PATHS.ramSize), VMC_PATHS.ramSize, MEMORY_MB_MIN, MEMORY_MB_MAX);
  if (mem !== undefined) s.memoryMB = mem;
  const vram = r.integer(r.at(root, VMC_PATHS.vramSize), VMC_PATHS.vramSize, VRAM_MB_MIN, VRAM_MB_MAX);
  if (vram !== undefined) s.videoMemoryMB = vram;

  // IDE drives
  const ide = r.at(root, VMC_PATHS.ideAdapter);
  const controllers = r.byId(ide, 'ide_controller', VMC_PATHS.ideAdapter, IDE_CONTROLLERS);
  for (const c of [...controllers.keys()].sort((a, b) => a - b)) {
    const cpath = `${VMC_PATHS.ideAdapter}/ide_controller[@id=${c}]`;
    const locations = r.byId(controllers.get(c), 'location', cpath, IDE_LOCATIONS);
    for (const l of [...locations.keys()].sort((a, b) => a - b)) {
      const loc = locations.get(l)!;
      const lpath = `${cpath}/location[@id=${l}]`;
      const code = r.integer(r.one(loc, 'drive_type', `${lpath}/drive_type`), `${lpath}/drive_type`, -(2 ** 31), 2 ** 31);
      const path = r.pathRef(r.one(loc, 'pathname', `${lpath}/pathname`), `${lpath}/pathname`);
      const undoPath = r.pathRef(r.one(loc, 'undo_pathname', `${lpath}/undo_pathname`), `${lpath}/undo_pathname`);
      let kind: VmcDriveKind;
      if (code === undefined) {
        if (path) throw r.error('EFORMAT', `${lpath}/drive_type`, 'missing for a location that names a path', loc);
        kind = 'none';
      } else {
        const k = (Object.keys(DRIVE_TYPE_CODES) as VmcDriveKind[]).find((x) => DRIVE_TYPE_CODES[x] === code);
        if (!k) throw r.error('EFORMAT', `${lpath}/drive_type`, `unknown drive type ${code} (0 none, 1 hard disk, 2 CD/DVD)`, r.one(loc, 'drive_type', ''));
        kind = k;
      }
      const d: VmcDrive = { controller: c, location: l, kind };
      if (kind === 'cd-dvd' && path?.absolute !== undefined && /^[A-Za-z](?::\\?)?$/.test(path.absolute) && path.relative === undefined) {
        d.hostDrive = path.absolute[0].toUpperCase();
      } else if (path && kind !== 'none') {
        d.path = path;
      }
      if (undoPath && kind === 'hard-disk') d.undoPath = undoPath;
      if (kind === 'hard-disk' && !d.path) throw r.error('EFORMAT', `${lpath}/pathname`, 'a hard disk without a path', loc);
      s.drives.push(d);
    }
  }

  // Network adapters
  const eth = r.at(root, VMC_PATHS.ethernetAdapter);
  const count = r.integer(r.one(eth, 'controller_count', `${VMC_PATHS.ethernetAdapter}/controller_count`), `${VMC_PATHS.ethernetAdapter}/controller_count`, 0, MAX_NETWORK_ADAPTERS);
  const nics = r.byId(eth, 'ethernet_controller', VMC_PATHS.ethernetAdapter, MAX_NETWORK_ADAPTERS);
  for (const id of [...nics.keys()].sort((a, b) => a - b)) {
    if (count !== undefined && id >= count) continue;
    const el = nics.get(id)!;
    const npath = `${VMC_PATHS.ethernetAdapter}/ethernet_controller[@id=${id}]`;
    const a: VmcNetworkAdapter = { id };
    const macEl = r.one(el, 'ethernet_card_address', `${npath}/ethernet_card_address`);
    const mac = r.bytes(macEl, `${npath}/ethernet_card_address`);
    if (mac !== undefined) {
      if (mac.length !== 12) throw r.error('EFORMAT', `${npath}/ethernet_card_address`, `a MAC address has 6 bytes, not ${mac.length / 2}`, macEl);
      if (parseInt(mac.slice(0, 2), 16) & 1) throw r.error('EFORMAT', `${npath}/ethernet_card_address`, `${formatMac(mac)} is a multicast address`, macEl);
      if (mac !== '000000000000') a.mac = formatMac(mac);
    }
    const vn = r.one(el, 'virtual_network', `${npath}/virtual_network`);
    const name = r.string(r.one(vn, 'name', `${npath}/virtual_network/name`), `${npath}/virtual_network/name`);
    if (name !== undefined) a.networkName = name;
    const nid = r.bytes(r.one(vn, 'id', `${npath}/virtual_network/id`), `${npath}/virtual_network/id`);
    if (nid !== undefined) a.networkId = nid;
    s.network.push(a);
  }

  // Undo drives: `enabled` is a boolean leaf; some writers nest it as enabled/enable.
  const undo = r.at(root, VMC_PATHS.undoDrives);
  const enEl = r.one(undo, 'enabled', `${VMC_PATHS.undoDrives}/enabled`);
  const nested = enEl && childElements(enEl).length ? r.one(enEl, 'enable', `${VMC_PATHS.undoDrives}/enabled/enable`) : undefined;
  const enabled = nested ? r.boolean(nested, `${VMC_PATHS.undoDrives}/enabled/enable`) : enEl && !childElements(enEl).length ? r.boolean(enEl, `${VMC_PATHS.undoDrives}/enabled`) : undefined;
  s.undo.enabled = enabled ?? false;
  const action = r.integer(r.one(undo, 'default_action', `${VMC_PATHS.undoDrives}/default_action`), `${VMC_PATHS.undoDrives}/default_action`, -(2 ** 31), 2 ** 31);
  if (action !== undefined) s.undo.defaultAction = action;

  const saved = r.pathRef(r.at(root, VMC_PATHS.savedState), VMC_PATHS.savedState);
  if (saved) s.savedState = saved;
  return s;
}

export interface ParseVmcOptions extends XmlSource {
  limits?: XmlLimits;
}

/** Check the XML declaration's encoding against the bytes. */
function checkDeclaredEncoding(declared: string | undefined, decoded: DecodedText, file: string | undefined): void {
  if (declared === undefined) return;
  const d = declared.trim().toLowerCase();
  const ok = decoded.encoding === 'utf-16le' ? ['utf-16', 'utf-16le', 'unicode'].includes(d) : ['utf-8', 'utf8'].includes(d);
  if (!ok) {
    throw new MedvError('EUNSUPPORTED', `the XML declaration names encoding "${declared.slice(0, 40)}" but the file is ${decoded.encoding === 'utf-16le' ? 'UTF-16LE' : 'UTF-8'} (only UTF-16LE with a byte-order mark and UTF-8 are read)`, { file, offset: decoded.bomBytes });
  }
}

/** Parse any of our XML files: size bound, decoding, declaration check, tree. */
export function parseXmlFile(buf: Buffer, opts: ParseVmcOptions = {}): { tree: XmlDocument; decoded: DecodedText } {
  const decoded = decodeXmlBytes(buf, opts);
  const tree = parseXmlTree(decoded, opts, opts.limits ?? DEFAULT_XML_LIMITS);
  checkDeclaredEncoding(tree.declaredEncoding, decoded, opts.file);
  return { tree, decoded };
}

/** Parse a .vmc file's bytes. */
export function parseVmc(buf: Buffer, opts: ParseVmcOptions = {}): VmcDocument {
  const { tree, decoded } = parseXmlFile(buf, opts);
  return { tree, settings: readVmcSettings(tree, opts.file), encoding: decoded.encoding, file: opts.file };
}

/** Write a .vmc as Virtual PC does: UTF-16LE with a byte-order mark, CRLF, `<preferences>` root. */
export function serializeVmc(doc: VmcDocument | XmlDocument): Buffer {
  const tree = 'tree' in doc ? doc.tree : doc;
  const text = serializeXmlTree(tree, { newline: '\r\n', indent: '    ', encodingName: 'UTF-16', spaceBeforeSlash: true });
  return encodeUtf16leBom(text);
}

// ---------------------------------------------------------------------------------------------
// Modifying

export interface VmcDriveUpdate {
  controller: number;
  location: number;
  kind: VmcDriveKind;
  /** Hard disk or ISO image. */
  path?: WindowsPathRef;
  /** CD/DVD drive bound to a host drive letter. */
  hostDrive?: string;
  /** Undo disk path; `null` removes it. */
  undoPath?: WindowsPathRef | null;
}

export interface VmcNetworkAdapterUpdate {
  /** MAC address (`00:03:ff:12:34:56`, `00-03-FF-12-34-56` or `0003ff123456`); absent leaves Virtual PC to assign one. */
  mac?: string;
  networkName?: string;
  networkId?: string;
}

export interface VmcUpdate {
  memoryMB?: number;
  videoMemoryMB?: number;
  /** Drives to set (each replaces what its controller/location held; unknown children stay). */
  drives?: VmcDriveUpdate[];
  undoEnabled?: boolean;
  /** Replaces the adapter list: adapter i gets id i; surplus controllers are removed. */
  network?: VmcNetworkAdapterUpdate[];
  /** The saved-state (.vsv) path; `null` removes it. */
  savedState?: WindowsPathRef | null;
}

function badArg(msg: string): MedvError {
  return new MedvError('EINVAL_ARG', msg);
}

/**
 * The child `name` (with @id when given) of `parent`, created at the end when missing. Identical
 * duplicates (the only ones a parsed document can hold) are folded into the first, so that changing
 * it does not leave a disagreeing copy behind.
 */
function ensureChild(parent: XmlElement, name: string, id?: number): XmlElement {
  const all = childElements(parent, name).filter((e) => {
    if (id === undefined) return true;
    const v = attr(e, 'id');
    return v !== undefined && /^\s*[0-9]+\s*$/.test(v) && Number(v) === id;
  });
  const found = all[0];
  if (all.length > 1) removeChildren(parent, (e) => e !== found && all.includes(e));
  if (found) return found;
  const el = newElement(name, id === undefined ? [] : [['id', String(id)]]);
  parent.children.push(el);
  return el;
}

function ensurePath(root: XmlElement, path: string): XmlElement {
  let cur = root;
  for (const step of path.split('/')) cur = ensureChild(cur, step);
  return cur;
}

function setLeaf(el: XmlElement, type: LeafType, value: string): void {
  setAttr(el, 'type', type);
  setText(el, value);
}

function removeChildren(parent: XmlElement, pred: (e: XmlElement) => boolean): void {
  parent.children = parent.children.filter((c) => c.kind !== 'element' || !pred(c));
}

function setPathRef(parent: XmlElement, name: string, ref: WindowsPathRef): void {
  const el = ensureChild(parent, name);
  setLeaf(ensureChild(el, 'absolute'), 'string', ref.absolute ?? '');
  setLeaf(ensureChild(el, 'relative'), 'string', ref.relative ?? '');
}

function checkInt(v: number, min: number, max: number, what: string): void {
  if (!Number.isInteger(v) || v < min || v > max) throw badArg(`${what} must be an integer in ${min}..${max}, not ${v}`);
}

export function normaliseMac(mac: string): string {
  const hex = mac.replace(/[:-]/g, '').toLowerCase();
  if (!/^[0-9a-f]{12}$/.test(hex)) throw badArg(`not a MAC address: ${mac}`);
  if (parseInt(hex.slice(0, 2), 16) & 1) throw badArg(`${mac} is a multicast address`);
  return hex;
}

/**
 * Apply changes to a copy of the document's tree and re-read it. Elements the update does not
 * touch, and unknown children of touched ones, are kept as they were.
 */
export function updateVmc(doc: VmcDocument, update: VmcUpdate): VmcDocument {
  const tree = cloneDocument(doc.tree);
  const root = tree.root;
  if (update.memoryMB !== undefined) {
    checkInt(update.memoryMB, MEMORY_MB_MIN, MEMORY_MB_MAX, 'memoryMB');
    setLeaf(ensurePath(root, VMC_PATHS.ramSize), 'integer', String(update.memoryMB));
  }
  if (update.videoMemoryMB !== undefined) {
    checkInt(update.videoMemoryMB, VRAM_MB_MIN, VRAM_MB_MAX, 'videoMemoryMB');
    setLeaf(ensurePath(root, VMC_PATHS.vramSize), 'integer', String(update.videoMemoryMB));
  }
  for (const d of update.drives ?? []) {
    checkInt(d.controller, 0, IDE_CONTROLLERS - 1, 'controller');
    checkInt(d.location, 0, IDE_LOCATIONS - 1, 'location');
    if (!(d.kind in DRIVE_TYPE_CODES)) throw badArg(`unknown drive kind ${String(d.kind)}`);
    if (d.kind === 'hard-disk' && !d.path?.absolute && !d.path?.relative) throw badArg('a hard disk needs a path');
    if (d.hostDrive !== undefined && (d.kind !== 'cd-dvd' || !/^[A-Za-z]$/.test(d.hostDrive))) throw badArg('hostDrive is one letter, for a CD/DVD drive');
    const loc = ensureChild(ensureChild(ensurePath(root, VMC_PATHS.ideAdapter), 'ide_controller', d.controller), 'location', d.location);
    setLeaf(ensureChild(loc, 'drive_type'), 'integer', String(DRIVE_TYPE_CODES[d.kind]));
    if (d.hostDrive !== undefined) setPathRef(loc, 'pathname', { absolute: d.hostDrive.toUpperCase() });
    else setPathRef(loc, 'pathname', d.kind === 'none' ? {} : d.path ?? {});
    if (d.undoPath === null || d.kind !== 'hard-disk') removeChildren(loc, (e) => e.name === 'undo_pathname');
    else if (d.undoPath !== undefined) setPathRef(loc, 'undo_pathname', d.undoPath);
  }
  if (update.undoEnabled !== undefined) {
    const undo = ensurePath(root, VMC_PATHS.undoDrives);
    const en = ensureChild(undo, 'enabled');
    const nested = childElements(en, 'enable')[0];
    setLeaf(nested ?? en, 'boolean', update.undoEnabled ? 'true' : 'false');
  }
  if (update.network !== undefined) {
    if (update.network.length > MAX_NETWORK_ADAPTERS) throw badArg(`at most ${MAX_NETWORK_ADAPTERS} network adapters`);
    const eth = ensurePath(root, VMC_PATHS.ethernetAdapter);
    setLeaf(ensureChild(eth, 'controller_count'), 'integer', String(update.network.length));
    removeChildren(eth, (e) => e.name === 'ethernet_controller' && !(Number(attr(e, 'id')) < update.network!.length));
    update.network.forEach((a, id) => {
      const nic = ensureChild(eth, 'ethernet_controller', id);
      const vn = a.networkId !== undefined || a.networkName !== undefined ? ensureChild(nic, 'virtual_network') : undefined;
      if (vn && a.networkId !== undefined) {
        if (!/^(?:[0-9a-fA-F]{2})*$/.test(a.networkId)) throw badArg('networkId is hex bytes');
        setLeaf(ensureChild(vn, 'id'), 'bytes', a.networkId.toUpperCase());
      }
      if (vn && a.networkName !== undefined) setLeaf(ensureChild(vn, 'name'), 'string', a.networkName);
      setLeaf(ensureChild(nic, 'ethernet_card_address'), 'bytes', a.mac === undefined ? '' : normaliseMac(a.mac).toUpperCase());
    });
  }
  if (update.savedState !== undefined) {
    const path = VMC_PATHS.savedState.split('/');
    if (update.savedState === null) {
      const parent = path.slice(0, -1).reduce<XmlElement | undefined>((el, step) => el && childElements(el, step)[0], root);
      if (parent) removeChildren(parent, (e) => e.name === path[path.length - 1]);
    } else {
      setPathRef(ensurePath(root, path.slice(0, -1).join('/')), path[path.length - 1], update.savedState);
    }
  }
  return { tree, settings: readVmcSettings(tree, doc.file), encoding: doc.encoding, file: doc.file };
}

/** A new .vmc document: `<preferences>` with `version` 2.0, then the given settings. */
export function createVmc(update: VmcUpdate = {}): VmcDocument {
  const root = newElement('preferences', [], [newElement('version', [['type', 'string']], [{ kind: 'text', value: '2.0' }])]);
  const tree: XmlDocument = { prolog: [], root, epilog: [] };
  return updateVmc({ tree, settings: readVmcSettings(tree), encoding: 'utf-16le' }, update);
}
