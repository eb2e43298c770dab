/**
 * The disk layers, the saved-state format and the key code, loaded by the supervisor once QEMU
 * has been started: their loading (sodium, the VHD and undo layers) then overlaps QEMU's own
 * start-up instead of preceding it (src/host/README.md, start order).
 */
export interface Layers {
  open: typeof import('../layers/open.js');
  vhd: typeof import('../layers/vhd/index.js');
  undo: typeof import('../layers/undo/index.js');
  saved: typeof import('../hypervisor/savedstate.js');
  crypto: typeof import('../crypto/index.js');
}

let loading: Promise<Layers> | undefined;

/** Load them once (later calls share the first load). */
export function loadLayers(): Promise<Layers> {
  return loading ??= Promise.all([import('../layers/open.js'), import('../layers/vhd/index.js'), import('../layers/undo/index.js'), import('../hypervisor/savedstate.js'), import('../crypto/index.js')])
    .then(([open, vhd, undo, saved, crypto]) => ({ open, vhd, undo, saved, crypto }));
}
