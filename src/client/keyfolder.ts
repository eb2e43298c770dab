/** The user's key folder (released image keys, wrapped under the client's KEK): written and removed by src/pack/keyfolder.ts, the owner of the layout. */
export { writeKeyFolder, removeKeyFolder } from '../pack/keyfolder.js';
