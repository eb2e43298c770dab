/**
 * The settings a workspace runs with: the .vmc, overridden by ImageState.xml. Pure.
 *
 * | setting        | ImageState.xml              | else the .vmc                 | else        |
 * |----------------|-----------------------------|-------------------------------|-------------|
 * | memory         | Memory                      | hardware/memory/ram_size      | error       |
 * | network        | Network (none drops all)    | nat when it has adapters      | none        |
 * | CD/DVD drives  | Devices/CdDvd false drops them | its cd-dvd drives          | -           |
 * | USB, clipboard, shared folders | Devices/...  | -                             | not allowed |
 * | first-time setup | FirstTimeSetup            | -                             | done        |
 */
import { MedvError } from '../../core/errors.js';
import type { VmcDrive, VmcNetworkAdapter, VmcSettings } from '../vmc/vmc.js';
import { MEMORY_MB_MAX, MEMORY_MB_MIN } from '../vmc/vmc.js';
import type { FirstTimeSetup, ImageState, NetworkMode } from './imagestate.js';

export type SettingSource = 'imagestate' | 'vmc' | 'default';

export interface EffectiveSettings {
  memoryMB: number;
  videoMemoryMB?: number;
  /** Drives to attach (CD/DVD drives removed when CD/DVD is not allowed). */
  drives: VmcDrive[];
  undoDrives: boolean;
  network: {
    mode: NetworkMode;
    /** Adapters for `nat`: the .vmc's, or one adapter with no fixed MAC when it has none. Empty for `none`. */
    adapters: VmcNetworkAdapter[];
  };
  devices: { usb: boolean; cdDvd: boolean; clipboard: boolean; sharedFolders: boolean };
  firstTimeSetup: FirstTimeSetup;
  /** Where each value came from. */
  sources: {
    memoryMB: SettingSource;
    network: SettingSource;
    usb: SettingSource;
    cdDvd: SettingSource;
    clipboard: SettingSource;
    sharedFolders: SettingSource;
    firstTimeSetup: SettingSource;
  };
}

export function effectiveSettings(vmc: VmcSettings, imageState?: ImageState, where: { file?: string } = {}): EffectiveSettings {
  const st: ImageState = imageState ?? { devices: {} };
  const dev = st.devices ?? {};

  let memoryMB: number; let memSrc: SettingSource;
  if (st.memoryMB !== undefined) { memoryMB = st.memoryMB; memSrc = 'imagestate'; }
  else if (vmc.memoryMB !== undefined) { memoryMB = vmc.memoryMB; memSrc = 'vmc'; }
  else throw new MedvError('EFORMAT', 'hardware/memory/ram_size: the .vmc gives no memory size and ImageState.xml none either', { file: where.file, element: 'hardware/memory/ram_size' });
  if (!Number.isInteger(memoryMB) || memoryMB < MEMORY_MB_MIN || memoryMB > MEMORY_MB_MAX) {
    throw new MedvError('EFORMAT', `memory ${memoryMB} MB is outside ${MEMORY_MB_MIN}..${MEMORY_MB_MAX}`, { file: where.file, element: memSrc === 'vmc' ? 'hardware/memory/ram_size' : 'ImageState/Memory' });
  }

  const pick = (v: boolean | undefined, dflt: boolean): [boolean, SettingSource] => (v === undefined ? [dflt, 'default'] : [v, 'imagestate']);
  const [usb, usbSrc] = pick(dev.usb, false);
  const [cdDvd, cdSrc] = pick(dev.cdDvd, true);
  const [clipboard, clipSrc] = pick(dev.clipboard, false);
  const [sharedFolders, sfSrc] = pick(dev.sharedFolders, false);

  let mode: NetworkMode; let netSrc: SettingSource;
  if (st.network !== undefined) { mode = st.network; netSrc = 'imagestate'; }
  else if (vmc.network.length) { mode = 'nat'; netSrc = 'vmc'; }
  else { mode = 'none'; netSrc = 'default'; }
  const adapters = mode === 'none' ? [] : vmc.network.length ? vmc.network.map((a) => ({ ...a })) : [{ id: 0 }];

  const out: EffectiveSettings = {
    memoryMB,
    drives: vmc.drives.filter((d) => d.kind !== 'none' && (cdDvd || d.kind !== 'cd-dvd')).map((d) => ({ ...d })),
    undoDrives: vmc.undo.enabled,
    network: { mode, adapters },
    devices: { usb, cdDvd, clipboard, sharedFolders },
    firstTimeSetup: st.firstTimeSetup ?? 'done',
    sources: {
      memoryMB: memSrc, network: netSrc, usb: usbSrc, cdDvd: cdSrc, clipboard: clipSrc, sharedFolders: sfSrc,
      firstTimeSetup: st.firstTimeSetup !== undefined ? 'imagestate' : 'default',
    },
  };
  if (vmc.videoMemoryMB !== undefined) out.videoMemoryMB = vmc.videoMemoryMB;
  return out;
}
