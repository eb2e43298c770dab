/** Virtual PC settings files for tests: a 2007-style `.vmc` (UTF-16LE with BOM, CRLF), written by hand. */
import { writeFileSync } from 'node:fs';

export interface TestVmcDrive {
  /** Windows relative path as the .vmc records it (`disk.vhd`, `..\x.vhd`), written as `.\<path>`. */
  path: string;
  kind?: 'hd' | 'cd';
}

export interface TestVmcOptions {
  /** In IDE order: primary master, primary slave, secondary master, secondary slave. */
  drives: TestVmcDrive[];
  memoryMB?: number;
  /** `settings/configuration/saved_state/path/relative`, as written (e.g. `.\work`). */
  savedState?: string;
  /** More XML inside `<preferences>`. */
  extra?: string;
}

/** Write a .vmc naming `drives` by Windows relative paths (an absolute path on an unmapped Z: beside each). */
export function writeVmc(path: string, opts: TestVmcOptions): void {
  const location = (d: TestVmcDrive, i: number) => [
    `                    <location id="${i & 1}">`,
    `                        <drive_type type="integer">${d.kind === 'cd' ? 2 : 1}</drive_type>`,
    '                        <pathname>',
    `                            <absolute type="string">Z:\\VMs\\${d.path}</absolute>`,
    `                            <relative type="string">.\\${d.path}</relative>`,
    '                        </pathname>',
    '                    </location>',
  ].join('\r\n');
  const locations = [0, 1].filter((c) => opts.drives.length > c * 2).map((c) => [
    `                <ide_controller id="${c}">`,
    ...opts.drives.slice(c * 2, c * 2 + 2).map((d, j) => location(d, c * 2 + j)),
    '                </ide_controller>',
  ].join('\r\n'));
  const xml = [
    '<?xml version="1.0" encoding="UTF-16"?>',
    '<preferences>',
    '    <version type="string">2.0</version>',
    '    <hardware>',
    `        <memory><ram_size type="integer">${opts.memoryMB ?? 32}</ram_size></memory>`,
    '        <pci_bus>',
    '            <ide_adapter>',
    ...locations,
    '            </ide_adapter>',
    '        </pci_bus>',
    '    </hardware>',
    ...(opts.savedState ? [`    <settings><configuration><saved_state><path><relative type="string">${opts.savedState}</relative></path></saved_state></configuration></settings>`] : []),
    opts.extra ?? '',
    '</preferences>',
    '',
  ].join('\r\n');
  writeFileSync(path, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(xml, 'utf16le')]));
}
