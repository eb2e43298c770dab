/**
 * The devices a workspace's VM got at its last cold start (the guest agent's port, the clipboard,
 * USB devices, the NIC model and disk bus), kept sealed with the client's host key in the version
 * folder (`vm-devices.sealed`). A suspended workspace resumes with these, not with what its policy
 * says now: a saved state can only be resumed on the hardware it was taken with, so a policy that
 * published its first application (the agent's port) or changed a device while the workspace was
 * suspended would otherwise make every later start fail (ESAVEDSTATE). The policy's new devices
 * apply from the next cold start; the start says so in one warning line. Shared folders are not
 * recorded: the user names them at each start (`--share`), and a resume must name the same ones.
 * The record names its VM and version, so a record copied from another workspace or version is not
 * taken.
 */
import { join, relative } from 'node:path';
import { readSealed, writeSealed, type ClientRoot, type ImageStore } from '../repo/index.js';
import { VM_DEVICES_FILE } from '../repo/images.js';
import type { VmConfig } from '../host/supervisor.js';

const PURPOSE = 'medv-vm-devices-v1';

/** The VmConfig fields that are the guest's devices here (shared folders aside: see above). */
const DEVICE_FIELDS = ['guestAgent', 'clipboard', 'usbDevices', 'nicModel', 'diskBus'] as const;
export type VmDevices = Pick<VmConfig, typeof DEVICE_FIELDS[number]>;
interface DevicesRecord { vmName: string; version: number; devices: VmDevices }

/** The device fields of `c` (absent ones stay absent). */
export function devicesOf(c: VmConfig): VmDevices {
  return Object.fromEntries(DEVICE_FIELDS.filter((k) => c[k] !== undefined).map((k) => [k, c[k]])) as VmDevices;
}

/** `c` with exactly the devices `d` (none of `c`'s own device fields kept). */
export function withDevices(c: VmConfig, d: VmDevices): VmConfig {
  const rest = Object.fromEntries(Object.entries(c).filter(([k]) => !(DEVICE_FIELDS as readonly string[]).includes(k))) as VmConfig;
  return { ...rest, ...d };
}

/** The same devices, compared as the VM sees them (an absent flag is false, an absent list empty). */
export function sameDevices(a: VmDevices, b: VmDevices): boolean {
  const norm = (d: VmDevices) => JSON.stringify([!!d.guestAgent, !!d.clipboard, (d.usbDevices ?? []).map((u) => [u.vendorId, u.productId]), d.nicModel ?? 'e1000', d.diskBus ?? 'ide']);
  return norm(a) === norm(b);
}

const fileOf = (c: ClientRoot, store: ImageStore, version: number) => relative(c.root, join(store.versionDir(version), VM_DEVICES_FILE));

/** Keep the devices VM `vmName` got at a cold start of `version`. */
export async function recordDevices(c: ClientRoot, store: ImageStore, version: number, vmName: string, config: VmConfig): Promise<void> {
  await writeSealed(c, fileOf(c, store, version), PURPOSE, { vmName, version, devices: devicesOf(config) } satisfies DevicesRecord);
}

/** The devices recorded for VM `vmName` at `version`, or undefined (none, or another VM's or version's). */
export async function recordedDevices(c: ClientRoot, store: ImageStore, version: number, vmName: string): Promise<VmDevices | undefined> {
  const r = await readSealed<DevicesRecord>(c, fileOf(c, store, version), PURPOSE);
  if (!r || r.vmName !== vmName || r.version !== version || typeof r.devices !== 'object' || r.devices === null) return undefined;
  return r.devices;
}
