import type { BlockDevice } from '../../block/device.js';
import { MedvError } from '../../core/errors.js';
import { VhdDevice } from './device.js';
import { type ParentInfo, type VhdInfo, loadVhdMeta, metaToInfo } from './metadata.js';

/** ESAVEDSTATE for a disk whose saved-state flag is set: what it means and the ways out. */
export function savedStateError(name: string, footerOffset?: number): MedvError {
  return new MedvError('ESAVEDSTATE',
    `${name} belongs to a suspended VM (its VHD saved-state flag is set): writing to it would break the saved state; ` +
    'resume the VM with `medv vm start`, or drop its saved state with `medv vm discard-state`; read-only use (disk info, check) works',
    footerOffset === undefined ? { file: name } : { file: name, offset: footerOffset + 84 });
}

/** Parse and validate a VHD's metadata (footer, header, BAT, locators) without opening it. */
export async function readVhdInfo(storage: BlockDevice, name?: string): Promise<VhdInfo> {
  const meta = (await loadVhdMeta(storage, name ?? storage.description))!;
  return metaToInfo(meta, storage.size);
}

/**
 * Open a VHD on `storage`. The device owns `storage` and its parent from then on (close() closes
 * both); if opening fails, `storage` is left open for the caller, and a parent obtained from
 * `openParent` is closed.
 *
 * Differencing disks need a parent: `opts.parent` (any BlockDevice of exactly the virtual size),
 * else `opts.openParent(info)`, else EPARENT. When the parent is itself a VhdDevice its unique id
 * must match the one recorded in the child (EPARENT).
 *
 * A VHD whose footer has the saved-state flag set (a suspended VM's disk) opens writable only with
 * `allowSavedState` (that VM's resume); otherwise ESAVEDSTATE, before its parent is opened. Read-only
 * opens are always allowed (inspection).
 */
export async function openVhd(storage: BlockDevice, opts: { readOnly?: boolean; name?: string; parent?: BlockDevice; openParent?: (info: ParentInfo) => Promise<BlockDevice>; allowSavedState?: boolean } = {}): Promise<VhdDevice> {
  const name = opts.name ?? storage.description;
  const meta = (await loadVhdMeta(storage, name))!;
  const readOnly = (opts.readOnly ?? false) || storage.readOnly;
  if (meta.footer.savedState && !readOnly && !opts.allowSavedState) throw savedStateError(name, meta.footerOffset);
  let parent: BlockDevice | undefined;
  if (meta.type === 'differencing') {
    const info = metaToInfo(meta, storage.size);
    let ownParent = false;
    if (opts.parent) {
      parent = opts.parent;
    } else if (opts.openParent) {
      parent = await opts.openParent(info.parent!);
      ownParent = true;
    } else {
      throw new MedvError('EPARENT', 'differencing VHD opened without a parent', { file: name });
    }
    try {
      if (parent.size !== meta.virtualSize) {
        throw new MedvError('EPARENT', `parent ${parent.description} has ${parent.size} bytes, the differencing disk ${meta.virtualSize}`, { file: name });
      }
      if (parent instanceof VhdDevice && !parent.info.uniqueId.equals(info.parent!.uniqueId)) {
        throw new MedvError('EPARENT', `parent ${parent.description} has unique id ${parent.info.uniqueId.toString('hex')}, the child expects ${info.parent!.uniqueId.toString('hex')}`, { file: name, offset: meta.headerOffset! + 40 });
      }
    } catch (e) {
      if (ownParent) await parent.close().catch(() => undefined);
      throw e;
    }
  } else if (opts.parent) {
    throw new MedvError('EINVAL_ARG', `a ${meta.type} VHD has no parent`, { file: name });
  }
  return new VhdDevice(storage, meta, parent, readOnly);
}
