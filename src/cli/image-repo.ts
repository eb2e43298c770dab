/** `medv image upload` and `medv image prune`: publishing packed images to a repository and retiring old versions. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { MedvError, fromSystemError } from '../core/errors.js';
import { DEFAULT_HELP } from '../core/paths.js';
import { formatBytes, printJson, progressBar, RAISES, raises } from './common.js';
import { parseSize } from '../core/units.js';

type Opts = Record<string, unknown>;

export function readTokenFile(file: string): string {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (e) { throw fromSystemError(e, file); }
  const token = text.trim();
  if (!token || token.length > 4096 || /\s/.test(token)) throw new MedvError('EFORMAT', 'the token file must hold one token', { file });
  return token;
}

export function addImageRepoCommands(image: Command): void {
  raises(image.command('upload <files...>'), [...RAISES.server, 'EINVAL_ARG', 'ENOENT', 'EEXIST', 'ENOKEY', 'EFORMAT', 'ECHANGED', 'EPRECONDITION'], {
    EINVAL_ARG: 'a file that is not <NAME>_<N>.ckm[.index]', EEXIST: 'another file is published under that name', EDENIED: 'the server refused the token', ENOKEY: 'no admin token',
    EFORMAT: 'the server refused the content', ENETWORK: 'network or server failure (run again to resume)',
  })
    .description('upload packs and indexes to a medv serve repository (resumable; packs before indexes)')
    .requiredOption('--server <url>', 'repository server, e.g. http://console:8080')
    .option('--token-file <file>', 'file holding the admin token (default $MEDV_ADMIN_TOKEN)')
    .option('--state-dir <dir>', `where unfinished uploads are remembered (default ${DEFAULT_HELP.uploadState})`)
    .option('--chunk-size <size>', 'bytes per request, or with K, M, G (a lost connection costs at most the request in flight)', '64M')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
Each file is sent with the tus protocol to <server>/upload/. The server checks it (name, header,
an index's packs already published) and publishes it atomically under <server>/images/. Packs
go first, so a client never sees an index whose packs are missing. An upload that is cut off
resumes where the server stopped receiving when the same command runs again. A file already
published with the same bytes is fine; other bytes under the same name are refused (exit 3).

Examples:
  medv image upload PackedImages/win10_2.ckm PackedImages/win10_2.ckm.index --server http://console:8080 --token-file admin.token
  MEDV_ADMIN_TOKEN=… medv image upload PackedImages/win10_* --server https://repo.example --json`)
    .action(async (files: string[], o: Opts) => {
      const token = o.tokenFile ? readTokenFile(String(o.tokenFile)) : process.env.MEDV_ADMIN_TOKEN;
      if (!token) throw new MedvError('ENOKEY', 'no admin token: give --token-file or set MEDV_ADMIN_TOKEN');
      const chunkSize = parseSize(String(o.chunkSize), '--chunk-size');
      const { uploadFiles } = await import('../client/upload.js');
      const bar = progressBar('upload');
      let r;
      try {
        r = await uploadFiles(files, { server: String(o.server), token, stateDir: o.stateDir as string | undefined, chunkSize, onProgress: bar.update });
      } finally {
        bar.stop();
      }
      if (o.json) printJson({ ok: true, files: r });
      else for (const f of r) process.stdout.write(`${f.file}: ${f.status} (${formatBytes(f.size)}${f.resumed ? `, resumed, ${formatBytes(f.sent)} sent` : ''})\n`);
    });

  raises(image.command('prune <dir>'), ['ENOENT', 'EINVAL_ARG', 'EUNSAFE', 'EREADONLY', 'EBUSY'])
    .description('delete the older versions of an image from a repository folder; the kept versions stay complete')
    .requiredOption('--name <name>', 'image name')
    .requiredOption('--keep <n>', 'how many of the highest versions to keep (1 or more)')
    .option('--dry-run', 'list what would be deleted, delete nothing')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
<dir> is a folder of packs and indexes: a console's PackedImages, or a server's <root>/images.
The N highest versions' indexes are kept, with every pack they name (a version's index may name
packs of earlier versions); older indexes go first, then the packs no kept index names. Only
files named <NAME>_<V>.ckm or <NAME>_<V>.ckm.index whose header is a pack or index of that image
are deleted; anything else is left alone and listed as skipped. A pack newer than the newest
index is kept (its index may still be uploading).

Examples:
  medv image prune /srv/medv/images --name win10 --keep 2 --dry-run
  medv image prune PackedImages --name lab --keep 1 --json`)
    .action(async (dir: string, o: Opts) => {
      if (!/^[0-9]{1,6}$/.test(String(o.keep))) throw new MedvError('EINVAL_ARG', `--keep must be a positive integer, not ${JSON.stringify(o.keep)}`);
      const { pruneImages } = await import('../server/prune.js');
      const r = await pruneImages(dir, { name: String(o.name), keep: Number(o.keep), dryRun: !!o.dryRun });
      if (r.keptVersions.length === 0 && existsSync(join(dir, 'images'))) {
        process.stderr.write(`medv: warning: no index of ${r.name} in ${dir}; a server's files are in ${join(dir, 'images')}\n`);
      }
      if (o.json) { printJson(r); return; }
      const verb = r.dryRun ? 'would delete' : 'deleted';
      process.stdout.write(`${r.name}: keeping version${r.keptVersions.length === 1 ? '' : 's'} ${r.keptVersions.join(', ') || '(none found)'}\n`);
      for (const f of r.deleted) process.stdout.write(`  ${verb} ${f}\n`);
      for (const s of r.skipped) process.stdout.write(`  left alone ${s.file}: ${s.reason}\n`);
      process.stdout.write(`${r.deleted.length} file${r.deleted.length === 1 ? '' : 's'} ${verb}, ${formatBytes(r.bytesFreed)}\n`);
    });
}
