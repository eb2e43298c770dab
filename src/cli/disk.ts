/** `medv disk …`: thin wrappers over src/disk and src/layers/undo. */
import { Command, Option } from 'commander';
import { parseSize } from '../core/units.js';
import { MedvError } from '../core/errors.js';
import { checkDiskFile, convertDisk, createDisk, describeDiskFile, serveDiskFile, type DiskDescription } from '../disk/index.js';
import { createUndoDisk, discardUndoDisk, mergeUndoDisk } from '../layers/undo/index.js';
import type { DiskFormat } from '../layers/open.js';
import { addKeyOptions, EXIT_DAMAGED, formatBytes, kekFrom, printJson, printResult, progressBar, RAISES, raises, type KeyOptions } from './common.js';

type Opts = KeyOptions & Record<string, unknown>;

/** What opening a disk can meet: a file missing or existing, its key, damage, a lock, a suspended VM. */
const DISK_ERRORS = [...RAISES.files, ...RAISES.keys, ...RAISES.damaged, ...RAISES.disk];

/** `--format raw|vhd|evhd` (like qemu-img -f): the format of the file named, instead of guessing. */
function formatOption(what = 'the disk'): Option {
  return new Option('--format <format>', `format of ${what} (default: from the name .evhd/.vhd/.vud/.raw/.img, else guessed from the content with a warning)`).choices(['raw', 'vhd', 'evhd']);
}

function formatOpts(o: Opts): { format?: DiskFormat; warn: (m: string) => void } {
  return { format: o.format as DiskFormat | undefined, warn: (m) => process.stderr.write(`medv: warning: ${m}\n`) };
}

export function diskCommand(): Command {
  const disk = new Command('disk').description('create, inspect, check, convert and serve disk images (raw, VHD, encrypted EVHD), and undo disks');

  raises(addKeyOptions(disk.command('create <path>')), [...RAISES.files, ...RAISES.keys, 'EUNSUPPORTED'], { EEXIST: 'the disk (or its .enc) exists' })
    .description('create an empty disk: a VHD, or an encrypted EVHD (named .evhd, with its key in .enc beside it)')
    .requiredOption('--size <size>', 'virtual size: bytes, or a number with K, M, G, T (rounded up to whole CHS geometry like Virtual PC and qemu-img)')
    .addOption(new Option('--type <type>', 'VHD layout').choices(['fixed', 'dynamic']).default('dynamic'))
    .option('--encrypt', 'encrypt (the path must end in .evhd; passphrase from MEDV_PASSPHRASE or --passphrase-file)')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  medv disk create base.vhd --size 10G\n  MEDV_PASSPHRASE=… medv disk create work.evhd --size 64M --type fixed --encrypt')
    .action(async (path: string, o: Opts) => {
      const info = await createDisk(path, { size: parseSize(String(o.size), '--size'), type: o.type as 'fixed' | 'dynamic', encrypt: Boolean(o.encrypt), kek: kekFrom(o) });
      const encrypted = path.toLowerCase().endsWith('.evhd');
      printResult(o.json, { path, type: info.type, virtualSize: info.virtualSize, encrypted }, () => `created ${path}: ${info.type} VHD, ${formatBytes(info.virtualSize)}${encrypted ? ', encrypted' : ''}`);
    });

  raises(addKeyOptions(disk.command('info <path>')), DISK_ERRORS)
    .description('show type, virtual size, creator, parent, encryption and allocation of a disk')
    .addOption(formatOption())
    .option('--json', 'print as JSON')
    .action(async (path: string, o: Opts) => {
      const d = await describeDiskFile(path, kekFrom(o), formatOpts(o));
      if (o.json) printJson(d); else process.stdout.write(renderInfo(d));
    });

  raises(addKeyOptions(disk.command('check <path>')), DISK_ERRORS, { [EXIT_DAMAGED]: 'the disk is damaged: the errors found are listed' })
    .description('structural check of a disk; exits non-zero (8) when it finds damage')
    .addOption(formatOption())
    .option('--json', 'print as JSON')
    .action(async (path: string, o: Opts) => {
      const r = await checkDiskFile(path, kekFrom(o), formatOpts(o));
      if (o.json) printJson(r);
      else {
        for (const e of r.errors) process.stdout.write(`error: ${e}\n`);
        for (const w of r.warnings) process.stdout.write(`warning: ${w}\n`);
        process.stdout.write(r.ok ? `${path}: no errors found\n` : `${path}: ${r.errors.length} error(s) found\n`);
      }
      if (!r.ok) process.exitCode = EXIT_DAMAGED;
    });

  raises(addKeyOptions(disk.command('convert <src> <dst>')), DISK_ERRORS, { EEXIST: 'the destination (or its .enc) exists' })
    .description('convert between raw, VHD and EVHD (VHD <-> EVHD of the same layout is byte-exact)')
    .addOption(new Option('--to <format>', 'destination format (default: from the destination name)').choices(['raw', 'vhd', 'evhd']))
    .addOption(new Option('--type <type>', 'VHD layout of the destination').choices(['fixed', 'dynamic']))
    .addOption(formatOption('the source'))
    .option('--parent <file>', 'the raw disk a differencing source (undo disk) was made over; a raw parent is never found through a locator')
    .option('--json', 'print the result as JSON')
    .action(async (src: string, dst: string, o: Opts) => {
      const bar = progressBar('convert');
      let r;
      try {
        r = await convertDisk(src, dst, { to: o.to as 'raw' | 'vhd' | 'evhd' | undefined, type: o.type as 'fixed' | 'dynamic' | undefined, kek: kekFrom(o), onProgress: bar.update, parent: o.parent as string | undefined, ...formatOpts(o) });
      } finally { bar.stop(); }
      const what = r.to === 'raw' ? 'raw' : `${r.type} ${r.to === 'evhd' ? 'VHD, encrypted' : 'VHD'}`;
      printResult(o.json, r, `converted ${src} (${r.from}) to ${dst}: ${what}, ${formatBytes(r.virtualSize)}`);
    });

  const undo = disk.command('undo').description('undo disks: a differencing disk that keeps the parent untouched until merge or discard');
  raises(addKeyOptions(undo.command('create <undo>')), DISK_ERRORS, { EEXIST: 'the undo disk exists' })
    .description('create an undo disk over a parent (an encrypted parent needs an .evhd undo disk); over a raw parent the undo disk records its size and a fingerprint, and the parent must then be named whenever the undo disk is used')
    .requiredOption('--parent <parent>', 'the parent disk (opened read-only)')
    .addOption(formatOption('the parent'))
    .addHelpText('after', '\nExamples:\n  medv disk undo create work.evhd --parent base.evhd\n  medv disk undo create work.vhd --parent disk.img --format raw\n  medv disk serve disk.img --format raw --undo work.vhd --socket /tmp/s    # a raw parent is named, never found')
    .option('--json', 'print the result as JSON')
    .action(async (undoPath: string, o: Opts) => {
      await createUndoDisk(undoPath, String(o.parent), { kek: kekFrom(o), ...formatOpts(o) });
      const encrypted = undoPath.toLowerCase().endsWith('.evhd');
      printResult(o.json, { undo: undoPath, parent: String(o.parent), encrypted }, `created undo disk ${undoPath} over ${String(o.parent)}${encrypted ? ' (encrypted)' : ''}: writes go to it, the parent stays as it is`);
    });
  raises(addKeyOptions(undo.command('merge <undo>')), DISK_ERRORS)
    .description('commit the undo disk into its parent, then delete it (safe to re-run if interrupted); refused while the undo disk is in use, and when the parent file has other hard links (a workspace\'s image base is shared by every workspace of the image)')
    .option('--parent <parent>', 'the parent to merge into (required for a raw parent: checked against the size and fingerprint the undo disk recorded)')
    .option('--json', 'print as JSON')
    .action(async (undoPath: string, o: Opts) => {
      const bar = progressBar('merge');
      let bytes = 0;
      try { bytes = await mergeUndoDisk(undoPath, { kek: kekFrom(o), parent: o.parent as string | undefined }, bar.update); } finally { bar.stop(); }
      printResult(o.json, { undo: undoPath, mergedBytes: bytes }, `merged ${undoPath} into its parent (${formatBytes(bytes)}) and deleted it`);
    });
  raises(addKeyOptions(undo.command('discard <undo>')), DISK_ERRORS, { EFORMAT: 'not an undo disk (nothing is deleted)' })
    .description('delete the undo disk (and its .enc): the parent reads as before; only a differencing disk not in use is deleted')
    .option('--json', 'print the result as JSON')
    .action(async (undoPath: string, o: Opts) => {
      await discardUndoDisk(undoPath, { kek: kekFrom(o) });
      printResult(o.json, { undo: undoPath, discarded: true }, `discarded undo disk ${undoPath}: its parent reads as before`);
    });

  raises(addKeyOptions(disk.command('serve <path>')), DISK_ERRORS)
    .description('export a disk over NBD on a unix socket until SIGINT/SIGTERM (QEMU: nbd+unix:///?socket=SOCK)')
    .requiredOption('--socket <sock>', 'unix socket path to listen on')
    .option('--read-only', 'refuse writes')
    .option('--undo <undo>', 'send writes to this undo disk (created over PATH if missing); PATH is its parent, held read-only')
    .addOption(formatOption())
    .option('--json', 'print a JSON line when ready')
    .addHelpText('after', '\nA writable serve holds PATH (or the undo disk) with an exclusive lock, a read-only serve and the\nparent of an undo disk a shared one: a second writer gets EBUSY (exit 9) naming the holding process.')
    .action(async (path: string, o: Opts) => {
      if (o.readOnly && o.undo) throw new MedvError('EINVAL_ARG', '--read-only and --undo exclude each other');
      const served = await serveDiskFile(path, { socketPath: String(o.socket), readOnly: Boolean(o.readOnly), undoPath: o.undo as string | undefined, kek: kekFrom(o), ...formatOpts(o) });
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
  if (d.savedState) lines.push('saved state:   set (the disk of a suspended VM: resume it with `medv vm start`; writing is refused)');
  return `${lines.join('\n')}\n`;
}
