/**
 * ImageState.xml: a workspace's overrides of its .vmc (schema in docs/imagestate.md).
 * Every element is optional; an absent element overrides nothing.
 */
import { MedvError } from '../../core/errors.js';
import { MEMORY_MB_MAX, MEMORY_MB_MIN, type ParseVmcOptions } from '../vmc/vmc.js';
import { newElement } from '../vmc/xmltree.js';
import { leaf, parseStrictRoot, writeStrict } from './common.js';

export const IMAGESTATE_ROOT = 'ImageState';
export const IMAGESTATE_VERSION = 1;

export type NetworkMode = 'nat' | 'none';
export const NETWORK_MODES: readonly NetworkMode[] = ['nat', 'none'];
export type FirstTimeSetup = 'pending' | 'done';
export const FIRST_TIME_SETUP: readonly FirstTimeSetup[] = ['pending', 'done'];

export interface DeviceAllowance {
  /** USB devices of the host may be passed to the guest. */
  usb?: boolean;
  /** The guest gets its CD/DVD drives (images named in the .vmc). */
  cdDvd?: boolean;
  /** Clipboard sharing between host and guest. */
  clipboard?: boolean;
  /** Host folders shared into the guest. */
  sharedFolders?: boolean;
}

export interface ImageState {
  /** Guest memory in MB, overriding the .vmc's ram_size. */
  memoryMB?: number;
  devices: DeviceAllowance;
  /** `nat`: QEMU user-mode networking; `none`: no network adapter at all. */
  network?: NetworkMode;
  /** Whether the workspace's first-time setup still has to run. */
  firstTimeSetup?: FirstTimeSetup;
}

const DEVICE_ELEMENTS: ReadonlyArray<[keyof DeviceAllowance, string]> = [
  ['usb', 'Usb'], ['cdDvd', 'CdDvd'], ['clipboard', 'Clipboard'], ['sharedFolders', 'SharedFolders'],
];

export function parseImageState(buf: Buffer, opts: ParseVmcOptions = {}): ImageState {
  const { root, r } = parseStrictRoot(buf, opts, IMAGESTATE_ROOT);
  r.version(root, IMAGESTATE_ROOT, [IMAGESTATE_VERSION]);
  const top = r.children(root, IMAGESTATE_ROOT, ['Memory', 'Devices', 'Network', 'FirstTimeSetup'], ['version']);
  const out: ImageState = { devices: {} };
  const mem = top.get('Memory');
  if (mem) out.memoryMB = r.integer(mem, `${IMAGESTATE_ROOT}/Memory`, MEMORY_MB_MIN, MEMORY_MB_MAX);
  const dev = top.get('Devices');
  if (dev) {
    const kids = r.children(dev, `${IMAGESTATE_ROOT}/Devices`, DEVICE_ELEMENTS.map(([, n]) => n));
    for (const [key, name] of DEVICE_ELEMENTS) {
      const el = kids.get(name);
      if (el) out.devices[key] = r.boolean(el, `${IMAGESTATE_ROOT}/Devices/${name}`);
    }
  }
  const net = top.get('Network');
  if (net) out.network = r.oneOf(net, `${IMAGESTATE_ROOT}/Network`, NETWORK_MODES);
  const fts = top.get('FirstTimeSetup');
  if (fts) out.firstTimeSetup = r.oneOf(fts, `${IMAGESTATE_ROOT}/FirstTimeSetup`, FIRST_TIME_SETUP);
  return out;
}

export function serializeImageState(s: ImageState): Buffer {
  const bad = (m: string): MedvError => new MedvError('EINVAL_ARG', `ImageState: ${m}`);
  const root = newElement(IMAGESTATE_ROOT, [['version', String(IMAGESTATE_VERSION)]]);
  if (s.memoryMB !== undefined) {
    if (!Number.isInteger(s.memoryMB) || s.memoryMB < MEMORY_MB_MIN || s.memoryMB > MEMORY_MB_MAX) throw bad(`memoryMB must be an integer in ${MEMORY_MB_MIN}..${MEMORY_MB_MAX}`);
    root.children.push(leaf('Memory', String(s.memoryMB)));
  }
  const devs = DEVICE_ELEMENTS.filter(([k]) => s.devices?.[k] !== undefined);
  if (devs.length) {
    root.children.push(newElement('Devices', [], devs.map(([k, n]) => {
      if (typeof s.devices[k] !== 'boolean') throw bad(`devices.${k} must be a boolean`);
      return leaf(n, s.devices[k] ? 'true' : 'false');
    })));
  }
  if (s.network !== undefined) {
    if (!NETWORK_MODES.includes(s.network)) throw bad(`network must be one of ${NETWORK_MODES.join(', ')}`);
    root.children.push(leaf('Network', s.network));
  }
  if (s.firstTimeSetup !== undefined) {
    if (!FIRST_TIME_SETUP.includes(s.firstTimeSetup)) throw bad(`firstTimeSetup must be one of ${FIRST_TIME_SETUP.join(', ')}`);
    root.children.push(leaf('FirstTimeSetup', s.firstTimeSetup));
  }
  return writeStrict(root);
}
