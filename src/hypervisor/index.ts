/** The hypervisor side: QMP client, QEMU driver (launch spec -> argv, process, waits), the test guest's constants. */
export * from './qmp.js';
export * from './qemu.js';
export * from './testguest.js';
