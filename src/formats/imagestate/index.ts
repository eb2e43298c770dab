export * from './imagestate.js';
export * from './globalimagedata.js';
export * from './effective.js';
