/** medv as a library: the block stack, keys, the NBD export, disk-file operations and the QEMU driver. */
export * from './core/errors.js';
export * from './block/device.js';
export { FileDevice, type FileOpenOptions } from './block/file.js';
export { MemoryDevice } from './block/memory.js';
export { validateRequest } from './block/validate.js';
export { parseSize, parseDuration, humanBytes } from './core/units.js';
export * as crypto from './crypto/index.js';
export * as vhd from './layers/vhd/index.js';
export * as evhd from './layers/evhd/index.js';
export * as undo from './layers/undo/index.js';
export { openDisk, detectFormat, type DiskFormat, type OpenedDisk, type OpenDiskOptions } from './layers/open.js';
export * as disk from './disk/index.js';
export * as nbd from './nbd/index.js';
export * as hypervisor from './hypervisor/index.js';
export * as vmc from './formats/vmc/index.js';
export * as imagestate from './formats/imagestate/index.js';
export * as pack from './pack/index.js';
export { native } from './native.js';
