/** `medv serve`: the image repository over HTTP (and later users, policies and keys). */
export * from './http.js';
export * from './images.js';
export * from './auth.js';
export * from './names.js';
export * from './inspect.js';
export * from './publish.js';
export * from './prune.js';
export * from './range.js';
export { strongEtag } from './static.js';
export * from './serve.js';
