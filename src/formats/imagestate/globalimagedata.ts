/**
 * GlobalImageData.xml: facts about an image that hold for all its versions (schema in
 * docs/imagestate.md): the minimum engine version that may run it and the workspace version.
 */
import { MedvError } from '../../core/errors.js';
import type { ParseVmcOptions } from '../vmc/vmc.js';
import { newElement } from '../vmc/xmltree.js';
import { leaf, parseStrictRoot, writeStrict } from './common.js';

export const GLOBALIMAGEDATA_ROOT = 'GlobalImageData';
export const GLOBALIMAGEDATA_VERSION = 1;
/** WorkspaceVersion range: 1..2^31-1. */
export const WORKSPACE_VERSION_MAX = 0x7fffffff;

export interface GlobalImageData {
  /** Minimum engine version, dotted numbers (`1.0`, `1.2.3`): 1 to 4 parts, each 0..65535. */
  virtualizationEngine: string;
  /** The workspace (image) version, a positive integer. */
  workspaceVersion: number;
  /** The VM name the client generated for the workspace this folder serves (VM-name rules), when recorded. */
  vmName?: string;
}

/** A VM name as the VM host accepts one (src/api/names.ts's workspace rule): at most 49 of letters, digits, `.`, `_`, `-`. */
const VM_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,48}$/;

/** `1.2.3` -> [1, 2, 3]; undefined when it is not a dotted version. */
export function parseEngineVersion(v: string): number[] | undefined {
  if (!/^[0-9]{1,5}(?:\.[0-9]{1,5}){0,3}$/.test(v)) return undefined;
  const parts = v.split('.').map(Number);
  return parts.every((p) => p <= 65535) ? parts : undefined;
}

/** Negative, zero or positive as a < b, a == b, a > b (missing parts count as 0: 1.0 == 1). */
export function compareEngineVersions(a: string, b: string): number {
  const pa = parseEngineVersion(a); const pb = parseEngineVersion(b);
  if (!pa || !pb) throw new MedvError('EINVAL_ARG', `not an engine version: ${!pa ? a : b}`);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** True when an engine of version `engine` may run an image that requires `data.virtualizationEngine`. */
export function engineSatisfies(data: GlobalImageData, engine: string): boolean {
  return compareEngineVersions(engine, data.virtualizationEngine) >= 0;
}

export function parseGlobalImageData(buf: Buffer, opts: ParseVmcOptions = {}): GlobalImageData {
  const { root, r } = parseStrictRoot(buf, opts, GLOBALIMAGEDATA_ROOT);
  r.version(root, GLOBALIMAGEDATA_ROOT, [GLOBALIMAGEDATA_VERSION]);
  const top = r.children(root, GLOBALIMAGEDATA_ROOT, ['VirtualizationEngine', 'WorkspaceVersion', 'VmName'], ['version']);
  const need = (name: string) => {
    const el = top.get(name);
    if (!el) throw r.error('EFORMAT', `${GLOBALIMAGEDATA_ROOT}/${name}`, 'missing', root);
    return el;
  };
  const engEl = need('VirtualizationEngine');
  const eng = r.text(engEl, `${GLOBALIMAGEDATA_ROOT}/VirtualizationEngine`);
  if (!parseEngineVersion(eng)) throw r.error('EFORMAT', `${GLOBALIMAGEDATA_ROOT}/VirtualizationEngine`, `${JSON.stringify(eng.slice(0, 40))} is not a version (1 to 4 dotted numbers, each 0..65535)`, engEl);
  const workspaceVersion = r.integer(need('WorkspaceVersion'), `${GLOBALIMAGEDATA_ROOT}/WorkspaceVersion`, 1, WORKSPACE_VERSION_MAX);
  const nameEl = top.get('VmName');
  if (!nameEl) return { virtualizationEngine: eng, workspaceVersion };
  const vmName = r.text(nameEl, `${GLOBALIMAGEDATA_ROOT}/VmName`);
  if (!VM_NAME_RE.test(vmName)) throw r.error('EFORMAT', `${GLOBALIMAGEDATA_ROOT}/VmName`, `${JSON.stringify(vmName.slice(0, 60))} is not a VM name`, nameEl);
  return { virtualizationEngine: eng, workspaceVersion, vmName };
}

export function serializeGlobalImageData(d: GlobalImageData): Buffer {
  if (typeof d.virtualizationEngine !== 'string' || !parseEngineVersion(d.virtualizationEngine)) {
    throw new MedvError('EINVAL_ARG', `GlobalImageData: virtualizationEngine ${JSON.stringify(d.virtualizationEngine)} is not a version`);
  }
  if (!Number.isInteger(d.workspaceVersion) || d.workspaceVersion < 1 || d.workspaceVersion > WORKSPACE_VERSION_MAX) {
    throw new MedvError('EINVAL_ARG', `GlobalImageData: workspaceVersion must be an integer in 1..${WORKSPACE_VERSION_MAX}`);
  }
  if (d.vmName !== undefined && !VM_NAME_RE.test(d.vmName)) throw new MedvError('EINVAL_ARG', `GlobalImageData: vmName ${JSON.stringify(d.vmName.slice(0, 60))} is not a VM name`);
  return writeStrict(newElement(GLOBALIMAGEDATA_ROOT, [['version', String(GLOBALIMAGEDATA_VERSION)]], [
    leaf('VirtualizationEngine', d.virtualizationEngine),
    leaf('WorkspaceVersion', String(d.workspaceVersion)),
    ...(d.vmName === undefined ? [] : [leaf('VmName', d.vmName)]),
  ]));
}
