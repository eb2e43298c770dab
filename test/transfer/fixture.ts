/**
 * A repository for fetch tests, made the way a console makes one: two versions of a /usr-content
 * disk (v2 rewrites 3% of v1's used blocks in scattered places), packed by `medv image pack`
 * into repo/, with a host key as the KEK (no Argon2id per command).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { MEDV_BIN, run, runMedv } from '../helpers/cli.js';
import { makeUsrDisk, mutateDisk, zstdAlone } from '../pack/images.js';

export const MiB = 1048576;

export interface Repo {
  root: string;
  repo: string;
  keys: string;
  hostKey: string;
  v1: string;
  v2: string;
  changed: number[];
  cache: string;
  medv(args: string[]): { code: number | null; stdout: string; stderr: string };
  /** `medv disk convert` the evhd to raw and `qemu-img compare` it with `raw`: true when identical. */
  sameAs(evhd: string, raw: string): boolean;
  env: Record<string, string>;
}

export function makeRepo(root: string, sizeMiB: number, fill = 0.5, seed = 31, sources?: string[]): Repo {
  const repo = join(root, 'repo');
  const keys = join(root, 'keys');
  const hostKey = join(root, 'host.key');
  const cache = join(root, 'cache');
  const v1 = join(root, 'v1.raw');
  const v2 = join(root, 'v2.raw');
  writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
  mkdirSync(repo);
  makeUsrDisk(v1, sizeMiB * MiB, fill, seed);
  copyFileSync(v1, v2);
  const changed = mutateDisk(v2, 0.03, seed + 1, sources);
  const env = { MEDV_PASSPHRASE: '', XDG_CACHE_HOME: cache };
  const medv = (args: string[]) => runMedv([...args, '--host-key', hostKey], env);
  for (const [raw, v] of [[v1, '1'], [v2, '2']]) {
    const r = medv(['image', 'pack', raw, '--name', 'lab', '--version', v, '--out', repo, '--keys', keys]);
    assert.equal(r.code, 0, r.stderr);
  }
  let n = 0;
  const sameAs = (evhd: string, raw: string) => {
    const out = join(root, `cmp-${n++}.raw`);
    const r = medv(['disk', 'convert', evhd, out]);
    assert.equal(r.code, 0, r.stderr);
    const c = spawnSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw, out]);
    spawnSync('rm', ['-f', out]);
    return c.status === 0;
  };
  return { root, repo, keys, hostKey, v1, v2, changed, cache, medv, sameAs, env };
}

/** `medv image fetch` as a child process (to kill it), with the repo's key and cache. */
export function spawnFetch(r: Repo, args: string[]) {
  return spawn(process.execPath, [MEDV_BIN, 'image', 'fetch', ...args, '--keys', r.keys, '--host-key', r.hostKey, '--json'], {
    env: { ...process.env, ...r.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** `medv …` without blocking this process (for servers running inside the test). */
export function medvAsync(r: Repo, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = spawn(process.execPath, [MEDV_BIN, ...args, '--host-key', r.hostKey], { env: { ...process.env, ...r.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d) => { stdout += d; });
  c.stderr.on('data', (d) => { stderr += d; });
  return new Promise((res) => c.once('close', (code) => res({ code, stdout, stderr })));
}

export { run, zstdAlone };
