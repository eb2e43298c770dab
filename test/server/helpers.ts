/**
 * `medv serve` as a child process of the test: started with --port 0 --json, ready when it prints
 * its {url, root, adminTokenFile} line; every later stdout line is one request, collected so a
 * test can wait for a request (an event, not a sleep).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, watch } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MEDV_BIN } from '../helpers/cli.js';

export interface LogEntry { method: string; path: string; status: number; bytes: number; received?: number }

export interface ServeProcess {
  url: string;
  root: string;
  adminTokenFile: string;
  child: ChildProcess;
  log: LogEntry[];
  stderr: () => string;
  /** Resolves with the log entry for which `pred` first holds (entries already seen count). */
  waitForLog(pred: (e: LogEntry, all: LogEntry[]) => boolean, timeoutMs?: number): Promise<LogEntry>;
  /** SIGTERM (or `signal`); resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startServe(root: string, args: string[] = []): Promise<ServeProcess> {
  const child = spawn(process.execPath, [MEDV_BIN, 'serve', '--root', root, '--port', '0', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => { err += d; });
  const log: LogEntry[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  const ready = new Promise<{ url: string; root: string; adminTokenFile: string }>((resolve, reject) => {
    let first = true;
    const timer = setTimeout(() => reject(new Error(`medv serve did not print its ready line: ${err}`)), 30_000);
    child.stdout!.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        // the ready line is the first with a url (a request that reached the new port before it was printed is logged first)
        if (first) {
          const o = JSON.parse(line);
          if (typeof o.url !== 'string') { log.push(o); continue; }
          first = false; clearTimeout(timer); resolve(o); continue;
        }
        log.push(JSON.parse(line));
        for (const w of [...waiters]) w();
      }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`medv serve exited ${code}: ${err}`)); });
  });
  const info = await ready;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    ...info,
    child,
    log,
    stderr: () => err,
    waitForLog(pred, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = log.find((e) => pred(e, log));
          if (!hit) return;
          clearTimeout(timer);
          waiters.splice(waiters.indexOf(check), 1);
          resolve(hit);
        };
        const timer = setTimeout(() => { waiters.splice(waiters.indexOf(check), 1); reject(new Error(`no such request in the server log within ${timeoutMs} ms: ${JSON.stringify(log.slice(-5))}`)); }, timeoutMs);
        waiters.push(check);
        check();
      });
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

export interface CurlResult { status: number; headers: string; body: Buffer }

/** curl as a peer: status, response headers (of the last response) and body bytes. */
export function curl(args: string[]): CurlResult {
  // (curl 7.88 crashes writing -D to /dev/stderr when stderr is a pipe: headers go to a file)
  const hfile = join(tmpdir(), `medv-curl-${process.pid}-${randomBytes(6).toString('hex')}`);
  const r = spawnSync('curl', ['-s', '-S', '--path-as-is', '-D', hfile, '-o', '-', ...args], { maxBuffer: 1 << 28 });
  if (r.error) throw r.error;
  if (r.signal) throw new Error(`curl ${args.join(' ')} died of ${r.signal}`);
  let headers = '';
  try { headers = readFileSync(hfile, 'latin1'); } catch { /* no response */ }
  rmSync(hfile, { force: true });
  const m = [...headers.matchAll(/^HTTP\/[0-9.]+ (\d{3})/gm)].pop();
  return { status: m ? Number(m[1]) : 0, headers, body: r.stdout };
}

export function header(h: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:\\s*(.*?)\\r?$`, 'im').exec(h);
  return m ? m[1] : undefined;
}

/** Run medv without blocking the event loop (the server's log keeps flowing); resolves with code and output. `env` is added to this process's (undefined removes a variable). */
export function runMedvAsync(args: string[], onChild?: (c: ChildProcess) => void, env: Record<string, string | undefined> = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [MEDV_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => { stdout += d; });
  child.stderr!.on('data', (d) => { stderr += d; });
  onChild?.(child);
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

/** curl URL into a file; resolves with the HTTP status. */
export function curlDownload(url: string, dst: string): number {
  const r = spawnSync('curl', ['-s', '-S', '-o', dst, '-w', '%{http_code}', url], { encoding: 'utf8' });
  if (r.error) throw r.error;
  return Number(r.stdout);
}

/** Resolves once `pred()` holds, checked whenever something in `dir` changes (fs.watch: an event, not a polling loop). */
export function waitInDir(dir: string, pred: () => boolean, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      let ok = false;
      try { ok = pred(); } catch { /* not yet */ }
      if (ok) { clearTimeout(timer); watcher.close(); resolve(); }
    };
    const watcher = watch(dir, check);
    const timer = setTimeout(() => { watcher.close(); reject(new Error(`condition in ${dir} not met within ${timeoutMs} ms`)); }, timeoutMs);
    check();
  });
}
