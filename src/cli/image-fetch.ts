/** `medv image fetch`: a packed image from a repository into a new .evhd. Thin wrapper over src/transfer. */
import type { Command } from 'commander';
import { DEFAULT_HELP, consoleKeyDir } from '../core/paths.js';
import { addKeyOptions, collect, formatBytes, kekFrom, printJson, progressBar, RAISES, raises, type KeyOptions } from './common.js';

type Opts = KeyOptions & Record<string, unknown>;

export function addImageFetchCommand(image: Command): void {
  raises(addKeyOptions(image.command('fetch <index>')), [...RAISES.files, ...RAISES.keys, ...RAISES.damaged, ...RAISES.disk, ...RAISES.server, 'ESIGNATURE', 'EBADBLOCK', 'ECHANGED'], {
    EEXIST: 'the output exists', ESIGNATURE: 'a bad signature or damaged repository data (nothing is left under the output name)', ENETWORK: 'the repository is unreachable or changed (run again to resume)',
  })
    .description('fetch a packed image (URL or path of <NAME>_<N>.ckm.index) into a new encrypted disk, taking what it can from local seeds')
    .requiredOption('--out <disk.evhd>', 'the new disk (must not exist); its key file NAME.enc is written beside it')
    .option('--seed <path>', 'a disk (.evhd, .vhd, raw), a folder of packs (PackedImages, PrestagedImages) or a .ckm.index to take blocks from (repeatable)', collect, [])
    .option('--host-data <dir>', 'a folder of host data whose regular files are hashed on a 4 KiB grid and used by block id (repeatable; links not followed, one file system)', collect, [])
    .option('--mirror <url>', 'base URL of a static copy of the packs, tried before the index\'s folder for pack data (repeatable, in order; at most 8; every block is still checked against the signed index)', collect, [])
    .option('--keys <dir>', `key folder with the image content key, the repository key and trusted signers (default ${DEFAULT_HELP.keys})`)
    .option('--no-trim', 'ignore seeds: take every block from the repository (an interrupted fetch still resumes)')
    .option('--dry-run', 'fetch the index only, and print what the blocks would cost (bytes, requests); write nothing')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
What it does:
  1. Downloads the index header and checks its signature against console.sign.pub and
     trusted/*.pub in the key folder before anything else; then the run records it does not
     already hold (records of an earlier index in a seed folder, or NAME.evhd.index beside a
     disk seed, are reused by hash). Holding version M of the image, it rebuilds the changed
     records from the signed index delta <NAME>_<N>.ckm.index-from-<M> when the repository has
     one (a delta that cannot be used is reported and the records are fetched instead).
  2. Looks every block up in the seeds: at the same place in a disk seed, else by its keyed id
     anywhere in the seeds (a disk's ids are cached under ${DEFAULT_HELP.seedCache}, keyed
     hashes only, by the disk's identity and content generation: a disk this command fetched is
     never hashed), and copies those.
  3. Fetches the rest from the packs (<NAME>_<N>.ckm beside the index) with coalesced range
     requests, several in flight; servers without multi-range or range support work too. With
     --mirror, each mirror's <URL><NAME>_<N>.ckm is tried first, in order: a mirror that fails
     or serves wrong bytes is one warning line, and the next source serves what it did not.
  4. Writes a new .evhd with a fresh data key (wrapped with MEDV_PASSPHRASE / --passphrase-file /
     --host-key), checking every block against its id just before it is written, and gives it
     its name once the last block is written.
  An interrupted fetch (killed, network down) leaves .NAME.evhd.medv-fetch/ beside the output;
  the same command run again fetches only what is still missing.

Examples:
  medv image fetch https://images.example/win10/win10_2.ckm.index --out win10-v2.evhd --seed win10-v1.evhd --keys keys
  medv image fetch /mnt/share/win10_2.ckm.index --out v2.evhd --seed /var/lib/medv/images/PrestagedImages
  medv image fetch URL --out v2.evhd --seed v1.evhd --dry-run --json
  medv image fetch https://console.example/images/win10_2.ckm.index --out v2.evhd --mirror http://branch-nginx/medv/images/`)
    .action(async (indexPath: string, o: Opts) => {
      const { fetchImage } = await import('../transfer/index.js');
      const bar = progressBar('fetch');
      let r;
      try {
        r = await fetchImage({
          source: indexPath,
          out: String(o.out),
          seeds: o.seed as string[],
          hostSeeds: o.hostData as string[],
          mirrors: o.mirror as string[],
          keyDir: (o.keys as string | undefined) ?? consoleKeyDir(),
          kek: kekFrom(o),
          trim: o.trim !== false,
          dryRun: o.dryRun === true,
          onProgress: bar.update,
          onWarning: (m) => process.stderr.write(`medv: warning: ${m}\n`),
        });
      } finally {
        bar.stop();
      }
      if (o.json) { printJson(r); return; }
      const w = process.stdout;
      if (r.dryRun) {
        w.write(`${r.name} version ${r.version} (${formatBytes(r.virtualSize)}): ${r.blocks} blocks, ${r.blocksResumed} already fetched, ${r.blocksFromSeeds} from seeds, ${r.blocksFromNetwork} to fetch\n`);
        w.write(`  would fetch ${formatBytes(r.wouldFetchBytes ?? 0)} in about ${r.wouldRequests} requests (index: ${formatBytes(r.networkBytes + r.repositoryFileBytes)} so far)\n`);
        return;
      }
      w.write(`fetched ${r.name} version ${r.version} into ${r.out} (${formatBytes(r.virtualSize)}) in ${r.seconds.toFixed(1)} s\n`);
      w.write(`  ${r.blocks} blocks: ${r.blocksFromSeeds} from seeds, ${r.blocksFromNetwork} from the repository, ${r.blocksResumed} from an earlier interrupted run\n`);
      w.write(`  ${formatBytes(r.networkBytes + r.repositoryFileBytes)} from the repository in ${r.requests} requests; index records: ${r.indexRecordsFetched} fetched, ${r.indexRecordsReused} reused, ${r.indexRecordsFromDelta} rebuilt from the index delta\n`);
    });
}
