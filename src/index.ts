export * from './errors.js';
export * from './block/device.js';
export { FileDevice } from './block/file.js';
export { MemoryDevice } from './block/memory.js';
export { validateRequest, parseSize } from './block/validate.js';
