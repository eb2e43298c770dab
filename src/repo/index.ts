/** The client repositories: image store, data repository, sealed files, device log, desktop entries, report queue (./README.md). */
export { type ClientRoot, clientRootLayout, openClientRoot, userDir, checkSafeDir, ensureSafeDir, pathInRoot } from './paths.js';
export { clientHostKey, deriveSubkey, HOST_KEY_FILE } from './hostkey.js';
export { writeSealed, readSealed, SEALED_MAX_JSON } from './sealed.js';
export { ImageStore, CURRENT_WORKSPACE_VERSION, ENGINE_VERSION, IDENTITY_FILE, checkImageId, type ImageIdentity, type VersionIdentity, type ForeignVersion, type ImageStoreOptions } from './images.js';
export { type LogRecord, DevLog, readDevLog, DEVLOG_FILE, DEVLOG_MAX_RECORD } from './devlog.js';
export { type PublishedApp, type DesktopInstance, writeDesktopEntries, removeDesktopEntries, quoteExecArg, slugOf } from './desktop.js';
export { type QueuedReport, ReportQueue, REPORTS_MAX, REPORTS_BATCH } from './reports.js';
export { userProfile } from './profile.js';
