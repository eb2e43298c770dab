/** `medv disk …`: thin wrappers over src/disk and src/layers/undo. */
import { Command, Option } from 'commander';
import { parseSize } from '../block/validate.js';
import { MedvError } from '../errors.js';
import { checkDiskFile, convertDisk, createDisk, describeDiskFile, serveDiskFile, type DiskDescription } from '../disk/index.js';
import { createUndoDisk, discardUndoDisk, mergeUndoDisk } from '../layers/undo/index.js';
import { addKeyOptions, EXIT_DAMAGED, formatBytes, kekFrom, printJson, progressBar, type KeyOptions } from './common.js';

type Opts = KeyOptions & Record<string, unknown>;

export function diskCommand(): Command {
  const disk = new Command('disk').description('create, inspect, check, convert and serve disk images (raw, VHD, encrypted EVHD), and undo disks');

  addKeyOptions(disk.command('create <path>'))
    .description('create an empty disk: a VHD, or an encrypted EVHD (named .evhd, with its key in .enc beside it)')
    .requiredOption('--size <size>', 'virtual size: bytes, or a number with K, M, G, T (rounded up to whole CHS geometry like Virtual PC and qemu-img)')
    .addOption(new Option('--type <type>', 'VHD layout').choices(['fixed', 'dynamic']).default('dynamic'))
    .option('--encrypt', 'encrypt (the path must end in .evhd; passphrase from MEDV_PASSPHRASE or --passphrase-file)')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  medv disk create base.vhd --size 10G\n  MEDV_PASSPHRASE=… medv disk create work.evhd --size 64M --type fixed --encrypt')
    .action(async (path: string, o: Opts) => {
      const info = await createDisk(path, { size: parseSize(String(o.size)), type: o.type as 'fixed' | 'dynamic', encrypt: Boolean(o.encrypt), kek: kekFrom(o) });
      if (o.json) printJson({ path, type: info.type, virtualSize: info.virtualSize, encrypted: path.toLowerCase().endsWith('.evhd') });
      else process.stdout.write(`created ${path}: ${info.type} VHD, ${formatBytes(info.virtualSize)}${path.toLowerCase().endsWith('.evhd') ? ', encrypted' : ''}\n`);
    });

  addKeyOptions(disk.command('info <path>'))
    .description('show type, virtual size, creator, parent, encryption and allocation of a disk')
    .option('--json', 'print as JSON')
    .action(async (path: string, o: Opts) => {
      const d = await describeDiskFile(path, kekFrom(o));
      if (o.json) printJson(d); else process.stdout.write(renderInfo(d));
    });

  addKeyOptions(disk.command('check <path>'))
    .description('structural check of a disk; exits non-zero (8) when it finds damage')
    .option('--json', 'print as JSON')
    .action(async (path: string, o: Opts) => {
      const r = await checkDiskFile(path, kekFrom(o));
      if (o.json) printJson(r);
      else {
        for (const e of r.errors) process.stdout.write(`error: ${e}\n`);
        for (const w of r.warnings) process.stdout.write(`warning: ${w}\n`);
        process.stdout.write(r.ok ? `${path}: no errors found\n` : `${path}: ${r.errors.length} error(s) found\n`);
      }
      if (!r.ok) process.exitCode = EXIT_DAMAGED;
    });

  addKeyOptions(disk.command('convert <src> <dst>'))
    .description('convert between raw, VHD and EVHD (VHD <-> EVHD of the same layout is byte-exact)')
    .addOption(new Option('--to <format>', 'destination format (default: from the destination name)').choices(['raw', 'vhd', 'evhd']))
    .addOption(new Option('--type <type>', 'VHD layout of the destination').choices(['fixed', 'dynamic']))
    .action(async (src: string, dst: string, o: Opts) => {
      const bar = progressBar('convert');
      try {
        await convertDisk(src, dst, { to: o.to as 'raw' | 'vhd' | 'evhd' | undefined, type: o.type as 'fixed' | 'dynamic' | undefined, kek: kekFrom(o), onProgress: bar.update });
      } finally { bar.stop(); }
    });

  const undo = disk.command('undo').description('undo disks: a differencing disk that keeps the parent untouched until merge or discard');
  addKeyOptions(undo.command('create <undo>'))
    .description('create an undo disk over a parent (an encrypted parent needs an .evhd undo disk)')
    .requiredOption('--parent <parent>', 'the parent disk (opened read-only)')
    .action(async (undoPath: string, o: Opts) => {
      await createUndoDisk(undoPath, String(o.parent), { kek: kekFrom(o) });
    });
  addKeyOptions(undo.command('merge <undo>'))
    .description('commit the undo disk into its parent, then delete it (safe to re-run if interrupted)')
    .option('--json', 'print as JSON')
    .action(async (undoPath: string, o: Opts) => {
      const bar = progressBar('merge');
      let bytes = 0;
      try { bytes = await mergeUndoDisk(undoPath, { kek: kekFrom(o) }, bar.update); } finally { bar.stop(); }
      if (o.json) printJson({ undo: undoPath, mergedBytes: bytes });
    });
  undo.command('discard <undo>')
    .description('delete the undo disk: the parent reads as before')
    .action(async (undoPath: string) => { await discardUndoDisk(undoPath); });

  addKeyOptions(disk.command('serve <path>'))
    .description('export a disk over NBD on a unix socket until SIGINT/SIGTERM (QEMU: nbd+unix:///?socket=SOCK)')
    .requiredOption('--socket <sock>', 'unix socket path to listen on')
    .option('--read-only', 'refuse writes')
    .option('--undo <undo>', 'send writes to this undo disk (created over PATH if missing)')
    .option('--json', 'print a JSON line when ready')
    .action(async (path: string, o: Opts) => {
      if (o.readOnly && o.undo) throw new MedvError('EINVAL_ARG', '--read-only and --undo exclude each other');
      const served = await serveDiskFile(path, { socketPath: String(o.socket), readOnly: Boolean(o.readOnly), undoPath: o.undo as string | undefined, kek: kekFrom(o) });
      const ready = { serving: path, socket: served.server.socketPath, uri: `nbd+unix:///?socket=${served.server.socketPath}`, readOnly: Boolean(o.readOnly), undo: o.undo ?? null, size: served.device.size };
      if (o.json) process.stdout.write(`${JSON.stringify(ready)}\n`);
      else process.stdout.write(`serving ${path} on ${ready.uri}${o.undo ? ` (writes go to ${o.undo})` : ''}${o.readOnly ? ' read-only' : ''}\n`);
      await new Promise<void>((resolveStop) => {
        const stop = () => resolveStop();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await served.close();
    });

  return disk;
}

function renderInfo(d: DiskDescription): string {
  const lines = [
    `path:          ${d.path}`,
    `format:        ${d.format}${d.encrypted ? ' (encrypted, aes-256-xts)' : ''}`,
    `type:          ${d.type}`,
    `virtual size:  ${formatBytes(d.virtualSize)}`,
  ];
  if (d.fileSize !== undefined) lines.push(`file size:     ${formatBytes(d.fileSize)}`);
  if (d.creator) lines.push(`creator:       ${JSON.stringify(d.creator.application)} ${d.creator.version} on ${JSON.stringify(d.creator.os)}`);
  if (d.uniqueId) lines.push(`unique id:     ${d.uniqueId}`);
  if (d.blockSize !== undefined) lines.push(`allocation:    ${d.allocatedBlocks}/${d.totalBlocks} blocks of ${formatBytes(d.blockSize)}`);
  if (d.parent) {
    lines.push(`parent:        ${d.parent.name} (unique id ${d.parent.uniqueId})`);
    for (const l of d.parent.locators) lines.push(`  locator ${l.platform}: ${l.path}`);
  }
  if (d.keyId) lines.push(`key id:        ${d.keyId}`);
  return `${lines.join('\n')}\n`;
}
