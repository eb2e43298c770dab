export * from './text.js';
export * from './xmltree.js';
export * from './paths.js';
export * from './vmc.js';
