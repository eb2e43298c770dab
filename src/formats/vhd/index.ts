export * from './common.js';
export * from './geometry.js';
export * from './footer.js';
export * from './dynheader.js';
export * from './bat.js';
export * from './bitmap.js';
export * from './locator.js';
export * from './rawparent.js';
