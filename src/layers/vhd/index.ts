/**
 * Microsoft VHD 1.0 as a block layer: fixed, dynamic and differencing disks on any storage
 * BlockDevice (a file, or the EVHD encryption container). See device.ts for I/O semantics and the
 * crash-safe block allocation order, create.ts for what medv writes.
 */
export type { VhdType, ParentInfo, VhdInfo } from './metadata.js';
export { VhdDevice } from './device.js';
export { readVhdInfo, openVhd, savedStateError } from './info.js';
export { createVhd, createDifferencingVhd } from './create.js';
export { checkVhd } from './check.js';
export { compactVhd } from './compact.js';
