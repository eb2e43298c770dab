/** `medv image …`: packed images (.ckm + .ckm.index). Thin wrappers over src/pack. */
import { Command } from 'commander';
import { openDisk } from '../layers/open.js';
import { MedvError } from '../core/errors.js';
import { DEFAULT_HELP, consoleKeyDir } from '../core/paths.js';
import { checkImageName } from '../formats/ckm/index.js';
import { addImageRepoCommands } from './image-repo.js';
import { addKeyOptions, formatBytes, kekFrom, printJson, progressBar, RAISES, raises, type KeyOptions } from './common.js';
import { addImageFetchCommand } from './image-fetch.js';

type Opts = KeyOptions & Record<string, unknown>;

/** The pack library (zstd, workers) is loaded when an image command runs, not with every `medv` command. */
const pack = () => import('../pack/index.js');

function parseVersion(v: string): number {
  if (!/^[0-9]{1,10}$/.test(v)) throw new MedvError('EINVAL_ARG', `--version must be a positive integer, not ${JSON.stringify(v)}`);
  return Number(v);
}

export function imageCommand(): Command {
  const image = new Command('image').description('packed images: pack a tested disk into a signed, encrypted .ckm + .ckm.index, and verify them');

  raises(addKeyOptions(image.command('pack <disk>')), [...RAISES.files, ...RAISES.keys, ...RAISES.damaged, ...RAISES.disk, 'ESIGNATURE'], { EEXIST: 'that version is already packed in --out' })
    .description('pack a disk (raw, VHD, EVHD, or a VHD/EVHD with its parents) into <NAME>_<N>.ckm and <NAME>_<N>.ckm.index')
    .requiredOption('--name <name>', 'image name (A-Z a-z 0-9 . _ -, up to 64)')
    .requiredOption('--version <n>', 'image version number (1, 2, …)')
    .option('--out <dir>', 'output folder (created if missing)', 'PackedImages')
    .option('--keys <dir>', `key folder: created keys are wrapped with the passphrase (default ${DEFAULT_HELP.keys})`)
    .option('--previous <index>', 'index of the version to build on, in --out (default: the highest lower version of NAME there)')
    .option('--no-previous', 'store every block, even those an earlier version already published')
    .option('--no-delta', 'never store a changed block as a delta against the block it replaces')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
What it does:
  Reads the disk's 4 KiB blocks, skips the all-zero ones, stores every distinct block once
  (zstd, then XChaCha20-Poly1305 with the image's content key) in <NAME>_<N>.ckm, and writes the
  block table to <NAME>_<N>.ckm.index, signed with the console key. Blocks that version N-1
  already published are referenced, not stored again; a changed block may be stored as a delta
  against the block it replaces. Both files appear only when complete.

Keys (created on first use in the key folder, wrapped with MEDV_PASSPHRASE / --passphrase-file
or --host-key, like disk keys):
  repository.key.enc  block-id key        images/<NAME>.key.enc  content key of the image
  console.sign.enc    signing key         console.sign.pub       give this to clients (trusted/)

Examples:
  MEDV_PASSPHRASE=… medv image pack gold.evhd --name win10 --version 1 --keys /srv/medv/keys
  MEDV_PASSPHRASE=… medv image pack gold.evhd --name win10 --version 2 --keys /srv/medv/keys   # stores only what changed
  medv image pack disk.vhd --name lab --version 3 --out PackedImages --json`)
    .action(async (disk: string, o: Opts) => {
      const version = parseVersion(String(o.version));
      checkImageName(String(o.name));
      const kek = kekFrom(o);
      const { openImageKeys, packImage } = await pack();
      const keyDir = (o.keys as string | undefined) ?? consoleKeyDir();
      const opened = await openDisk(disk, { readOnly: true, kek });
      const bar = progressBar('pack');
      try {
        const keys = await openImageKeys(keyDir, String(o.name), kek, { create: true, sign: true });
        try {
          const previous = o.previous === false ? false : (o.previous as string | undefined);
          const r = await packImage(opened.device, { name: String(o.name), version, outDir: String(o.out), keys, previous, delta: o.delta !== false, onProgress: bar.update });
          bar.stop();
          if (o.json) printJson(r);
          else {
            const s = r.stats;
            process.stdout.write(`packed ${disk} as ${r.name} version ${r.version} (${formatBytes(r.virtualSize)}) in ${r.seconds.toFixed(1)} s\n`);
            process.stdout.write(`  ${r.packPath}: ${formatBytes(r.packBytes)}, ${s.storedBlocks} blocks stored${s.deltaBlocks ? ` (${s.deltaBlocks} as deltas)` : ''}\n`);
            process.stdout.write(`  ${r.indexPath}: ${formatBytes(r.indexBytes)}\n`);
            if (r.deltaPath) process.stdout.write(`  ${r.deltaPath}: ${formatBytes(r.deltaBytes)} (what changed in the index since ${r.previous}, for clients holding that version)\n`);
            process.stdout.write(`  ${s.zeroBlocks} zero blocks skipped, ${s.dedupBlocks} duplicates stored once, ${s.reusedBlocks} blocks reused from ${r.previous ?? 'no earlier version'}\n`);
          }
        } finally {
          keys.dispose();
        }
      } finally {
        bar.stop();
        await opened.device.close();
      }
    });

  raises(addKeyOptions(image.command('verify <index>')), ['ENOENT', ...RAISES.keys, ...RAISES.damaged, 'ESIGNATURE', 'EBADBLOCK'], { ENOKEY: 'a missing or wrong key', EBADKEY: 'a missing or wrong key', ESIGNATURE: 'a bad signature, a damaged or truncated file, or a block that does not match its id' })
    .description('check an index and its packs: signature by a trusted key, then every block decrypts, decompresses and matches its id')
    .option('--keys <dir>', `key folder with the image content key, the repository key and trusted signers (default ${DEFAULT_HELP.keys})`)
    .option('--packs <dir>', 'folder of the .ckm files (default: the index\'s folder)')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
Trusted signers are console.sign.pub and trusted/*.pub in the key folder.

Examples:
  MEDV_PASSPHRASE=… medv image verify PackedImages/win10_2.ckm.index --keys /srv/medv/keys
  medv image verify win10_2.ckm.index --keys keys --host-key /etc/medv/host.key --json`)
    .action(async (indexPath: string, o: Opts) => {
      const bar = progressBar('verify');
      let r;
      try {
        const { verifyPack } = await pack();
        r = await verifyPack(indexPath, { keyDir: (o.keys as string | undefined) ?? consoleKeyDir(), kek: kekFrom(o), packDir: o.packs as string | undefined, onProgress: bar.update });
      } finally {
        bar.stop();
      }
      if (o.json) printJson({ ok: true, ...r });
      else process.stdout.write(`${indexPath}: ok: ${r.name} version ${r.version}, signed by ${r.signer.slice(0, 16)}…, ${r.checkedBlocks} blocks in pack${r.packs.length > 1 ? 's' : ''} ${r.packs.join(', ')} decrypt and match their ids\n`);
    });

  addImageFetchCommand(image);
  addImageRepoCommands(image);
  return image;
}
