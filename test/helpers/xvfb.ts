/**
 * A private X server for tests that look at a window. Xvfb picks a free display itself
 * (`-displayfd`) and writes its number only once it accepts clients: no fixed display number
 * that another X server or a stale socket may hold, and no polling for the socket file.
 */
import { spawn } from 'node:child_process';

export interface XServer {
  /** e.g. ":3", for $DISPLAY. */
  display: string;
  stop(): void;
}

export function startXvfb(timeoutMs = 15_000): Promise<XServer> {
  const child = spawn('Xvfb', ['-displayfd', '3', '-screen', '0', '1024x768x24', '-nolisten', 'tcp'], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr = (stderr + s).slice(-4000); });
  const stop = () => { if (child.exitCode === null && child.signalCode === null) child.kill(); };
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { stop(); reject(new Error(`Xvfb did not report a display within ${timeoutMs} ms: ${stderr}`)); }, timeoutMs);
    const fail = (why: string) => { clearTimeout(timer); stop(); reject(new Error(`Xvfb ${why}: ${stderr}`)); };
    child.once('error', (e) => fail(`could not start (${e.message})`));
    child.once('exit', (code, signal) => fail(`exited (${code ?? signal}) before reporting a display`));
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.setEncoding('utf8');
    fd3.on('data', (s: string) => {
      out += s;
      const m = /^(\d+)\n/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      resolve({ display: `:${m[1]}`, stop });
    });
  });
}
