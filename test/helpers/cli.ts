/** Helpers for tests that drive the real `medv` command and inspect files on disk. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const MEDV_BIN = join(REPO_ROOT, 'bin/medv');
export const TEST_PASSPHRASE = 'correct horse battery staple';

export interface RunResult { code: number | null; stdout: string; stderr: string }

/**
 * Run `bin/medv`; a command still running after `timeoutMs` (default 120 s) is killed and has code null.
 * Every run is also held to the CLI's shape (src/cli/README.md): the exit status is one its `--help`
 * lists, and no line is printed on both stdout and stderr. A run that breaks either throws.
 */
export function runMedv(args: string[], env: Record<string, string | undefined> = {}, opts: { timeoutMs?: number } = {}): RunResult {
  const r = spawnSync(process.execPath, [MEDV_BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, MEDV_PASSPHRASE: TEST_PASSPHRASE, ...env },
    timeout: opts.timeoutMs ?? 120_000,
  });
  const result = { code: r.status, stdout: r.stdout, stderr: r.stderr };
  checkShape(args, result);
  return result;
}

let exitTable: Record<string, number[]> | undefined;

/** The exit statuses each leaf command's help lists, read once per test process from the real program. */
function declaredExits(): Record<string, number[]> {
  if (exitTable) return exitTable;
  const main = join(REPO_ROOT, 'dist/src/cli/main.js');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(main)}); process.stdout.write(JSON.stringify(await m.exitStatusTable()));`], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`could not read the exit-status table: ${r.stderr}`);
  return (exitTable = JSON.parse(r.stdout) as Record<string, number[]>);
}

/** The leaf a command line names (`disk undo create`), or undefined when it names none (`--help`, a usage error). */
export function leafOf(args: string[], table: Record<string, number[]>): string | undefined {
  const words = args.filter((a) => !a.startsWith('-'));
  for (let n = Math.min(words.length, 3); n > 0; n--) {
    const key = words.slice(0, n).join(' ');
    if (Object.hasOwn(table, key)) return key;
  }
  return undefined;
}

function checkShape(args: string[], r: RunResult): void {
  const out = new Set(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean));
  const twice = r.stderr.split('\n').map((l) => l.trim()).filter((l) => l && out.has(l));
  if (twice.length) throw new Error(`medv ${args.join(' ')} printed the same line on stdout and stderr: ${JSON.stringify(twice[0])}`);
  if (r.code === null || r.code <= 2) return;
  const table = declaredExits();
  const leaf = leafOf(args, table);
  if (leaf && !table[leaf].includes(r.code)) {
    throw new Error(`medv ${leaf} exited ${r.code}, a status its --help does not list (${table[leaf].join(', ')}); declare the code with raises() in src/cli/:\n${r.stderr}`);
  }
}

/**
 * Run medv asynchronously (the event loop keeps turning: a server, proxy or watcher in this
 * process goes on answering), with the test passphrase and `env` over ours; resolves when it exits.
 */
export function runMedvAsync(args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MEDV_BIN, ...args], { env: { ...process.env, MEDV_PASSPHRASE: TEST_PASSPHRASE, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => { stdout += d; });
    child.stderr!.on('data', (d) => { stderr += d; });
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Start a long-running medv command (serve); resolves once it printed its ready line. */
export async function startMedv(args: string[], env: Record<string, string | undefined> = {}): Promise<ChildProcess> {
  const child = spawn(process.execPath, [MEDV_BIN, ...args], {
    env: { ...process.env, MEDV_PASSPHRASE: TEST_PASSPHRASE, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  await new Promise<void>((res, rej) => {
    let out = '';
    const timer = setTimeout(() => rej(new Error(`medv ${args.join(' ')} did not become ready: ${err}`)), 30_000);
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) { clearTimeout(timer); res(); }
    });
    child.once('exit', (code) => { clearTimeout(timer); rej(new Error(`medv exited ${code}: ${err}`)); });
  });
  return child;
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** True when any `run`-byte run of `pattern` (taken at any phase of its repetition) occurs in the file. */
export function containsPattern(path: string, pattern: Buffer, run = 32): boolean {
  const data = readFileSync(path);
  const doubled = Buffer.concat([pattern, pattern, pattern]);
  for (let phase = 0; phase < pattern.length; phase++) {
    if (data.indexOf(doubled.subarray(phase, phase + run)) >= 0) return true;
  }
  return false;
}

/** A fresh folder under the system temp dir, named medv-PREFIX-XXXXXX; cleanup removes it. */
export function tempDir(prefix: string): { path: string; cleanup: () => Promise<void> } {
  const path = mkdtempSync(join(tmpdir(), `medv-${prefix}-`));
  return { path, cleanup: async () => rmSync(path, { recursive: true, force: true }) };
}

/** Run a tool and return its stdout; throw with its stderr and stdout when it fails. */
export function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Resolves when `path` exists: watches its folder (an event, not a polling loop); rejects after `timeoutMs`. */
export function waitForFile(path: string, timeoutMs: number): Promise<void> {
  return new Promise((res, rej) => {
    const watcher = watch(dirname(path), () => { if (existsSync(path)) done(); });
    const timer = setTimeout(() => { watcher.close(); rej(new Error(`${path} did not appear within ${timeoutMs} ms`)); }, timeoutMs);
    const done = () => { clearTimeout(timer); watcher.close(); res(); };
    if (existsSync(path)) done();
  });
}

/** Resolves with the match once the text of `file` matches `re` (fs.watch on its folder, no polling loop); rejects after `timeoutMs`. */
export function waitForFileText(file: string, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!existsSync(file)) return;
      const m = readFileSync(file, 'latin1').match(re);
      if (m) { clearTimeout(timer); watcher.close(); resolve(m); }
    };
    const watcher = watch(dirname(file), check);
    const timer = setTimeout(() => {
      watcher.close();
      reject(new Error(`${file} did not match ${re} within ${timeoutMs} ms:\n${existsSync(file) ? readFileSync(file, 'latin1') : '(missing)'}`));
    }, timeoutMs);
    check();
  });
}

/** Resolves when a process that is not our child has exited (tail --pid exits with it). */
export function waitForPidExit(pid: number): Promise<void> {
  return new Promise((resolve) => {
    const t = spawn('tail', [`--pid=${pid}`, '-s', '0.1', '-f', '/dev/null'], { stdio: 'ignore' });
    t.once('exit', () => resolve());
  });
}
