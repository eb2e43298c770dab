/**
 * A private nginx for tests: its own prefix, conf and logs in a temp folder, on 127.0.0.1 with a
 * port asked of the OS (retried with another one if nginx then cannot bind it), started in the
 * foreground (`-g 'daemon off;'`). Ready means its pid file exists (nginx writes it after its
 * sockets are bound). The access log gives what a client really moved: `$bytes_sent` per request.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync, rmSync, watch } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { waitForFile } from './cli.js';

export interface AccessLine { method: string; uri: string; status: number; bytesSent: number; range: string }

export interface Nginx {
  port: number;
  url(path: string): string;
  /** Parsed access log so far. */
  log(): AccessLine[];
  /** Total `$bytes_sent` of lines whose uri passes `filter`. */
  bytes(filter?: (uri: string) => boolean): number;
  /** Forget the log so far (new lines only from now on). */
  resetLog(): void;
  /** Resolves once the access log (lines since resetLog) satisfies `pred`: watches the log folder, no polling. */
  waitFor(pred: (lines: AccessLine[]) => boolean, timeoutMs?: number): Promise<AccessLine[]>;
  /** Stop (SIGTERM: connections are dropped) and wait for the exit. */
  stop(): Promise<void>;
  /** Start again on the same port and conf. */
  start(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

export async function startNginx(prefix: string, root: string, opts: { maxRanges?: number } = {}): Promise<Nginx> {
  mkdirSync(join(prefix, 'logs'), { recursive: true });
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  const logPath = join(prefix, 'logs', 'access.log');
  const pidPath = join(prefix, 'logs', 'nginx.pid');
  let port = 0;
  let child: ChildProcess | undefined;
  let skip = 0;

  // as root, nginx would run its worker as nobody, which cannot read a private temp folder
  const user = typeof process.getuid === 'function' && process.getuid() === 0 ? 'user root;' : '';
  const writeConf = () => writeFileSync(join(prefix, 'nginx.conf'), `
${user}
worker_processes 1;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 128; }
http {
  log_format medv '$request_method $uri $status $bytes_sent "$http_range"';
  access_log logs/access.log medv;
  client_body_temp_path tmp/body; proxy_temp_path tmp/proxy; fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_timeout 60;
  keepalive_requests 10000;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    ${opts.maxRanges !== undefined ? `max_ranges ${opts.maxRanges};` : ''}
    location / { }
  }
}
`);

  const launch = async (): Promise<void> => {
    rmSync(pidPath, { force: true });
    writeConf();
    const c = spawn('nginx', ['-p', prefix, '-c', join(prefix, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    let stderr = '';
    c.stderr!.on('data', (d) => { stderr += d; });
    const exited = new Promise<never>((_res, rej) => c.once('exit', (code) => rej(new Error(`nginx exited (${code}): ${stderr}${existsSync(join(prefix, 'logs/error.log')) ? readFileSync(join(prefix, 'logs/error.log'), 'utf8').slice(-2000) : ''}`))));
    exited.catch(() => undefined);
    await Promise.race([waitForFile(pidPath, 15_000), exited]);
  };

  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (e) {
      if (attempt >= 5 || !/in use/i.test(String((e as Error).message))) throw e;
    }
  }

  const parse = (): AccessLine[] => {
    if (!existsSync(logPath)) return [];
    return readFileSync(logPath, 'utf8').split('\n').filter(Boolean).slice(skip).map((l) => {
      const m = /^(\S+) (\S+) (\d+) (\d+) "(.*)"$/.exec(l);
      if (!m) throw new Error(`access log line not understood: ${l}`);
      return { method: m[1], uri: m[2], status: Number(m[3]), bytesSent: Number(m[4]), range: m[5] };
    });
  };
  const allLines = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8').split('\n').filter(Boolean).length : 0);

  return {
    get port() { return port; },
    url: (p: string) => `http://127.0.0.1:${port}/${p}`,
    log: parse,
    bytes: (filter = () => true) => parse().filter((l) => filter(l.uri)).reduce((s, l) => s + l.bytesSent, 0),
    resetLog: () => { skip = allLines(); },
    waitFor: (pred, timeoutMs = 60_000) => new Promise((res, rej) => {
      const check = () => {
        let lines: AccessLine[];
        try { lines = parse(); } catch { return; } // a line being written
        if (pred(lines)) { done(); res(lines); }
      };
      const watcher = watch(join(prefix, 'logs'), check);
      const timer = setTimeout(() => { done(); rej(new Error('access log did not show what was waited for')); }, timeoutMs);
      const done = () => { clearTimeout(timer); watcher.close(); };
      check();
    }),
    stop: async () => {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      await new Promise<void>((res) => { c.once('exit', () => res()); c.kill('SIGTERM'); });
    },
    start: launch,
  };
}
