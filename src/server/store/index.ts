/** The server store: one schema and one query layer over SQLite and PostgreSQL. */
export * from './schema.js';
export * from './open.js';
export * from './store.js';
export * from './sessions.js';
export * from './listing.js';
export * from './clients.js';
export * from './policies.js';
export * from './controls.js';
export { MIGRATIONS } from './migrations.js';
