/** The user's key folder (released image keys, wrapped under the client's KEK): written by src/pack/keyfolder.ts, the owner of the layout. */
export { writeKeyFolder } from '../pack/keyfolder.js';
