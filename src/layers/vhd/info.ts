import type { BlockDevice } from '../../block/device.js';
import { MedvError } from '../../errors.js';
import { VhdDevice } from './device.js';
import { type ParentInfo, type VhdInfo, loadVhdMeta, metaToInfo } from './metadata.js';

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
 */
export async function openVhd(storage: BlockDevice, opts: { readOnly?: boolean; name?: string; parent?: BlockDevice; openParent?: (info: ParentInfo) => Promise<BlockDevice> } = {}): Promise<VhdDevice> {
  const name = opts.name ?? storage.description;
  const meta = (await loadVhdMeta(storage, name))!;
  const readOnly = (opts.readOnly ?? false) || storage.readOnly;
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
