/** What a benchmark measures of a child process, from /proc. */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
const now = () => Number(process.hrtime.bigint()) / 1e9;

export interface Measured { seconds: number; cpuSeconds: number; peakMiB: number; readBytes: number; code: number | null; stdout: string; stderr: string }

/**
 * Runs a command; returns its wall time, peak RSS (VmHWM), bytes read (rchar) and CPU time (user +
 * system of all its threads and waited-for children, from /proc/PID/stat: the last 20 ms before
 * it exits are not seen), polled from /proc until it exits, and what it printed.
 */
export function measured(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Measured> {
  return new Promise((resolve) => {
    const s = now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => { stdout += d; });
    child.stderr!.on('data', (d) => { stderr += d; });
    let peak = 0;
    let readBytes = 0;
    let ticks = 0;
    const poll = setInterval(() => {
      try {
        const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        ticks = Math.max(ticks, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])); // its own and its waited-for children's
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak, Number(m[1]) / 1024);
        const io = /rchar:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/io`, 'utf8'));
        if (io) readBytes = Math.max(readBytes, Number(io[1]));
      } catch { /* exited */ }
    }, 20);
    child.once('close', (code) => { clearInterval(poll); resolve({ seconds: now() - s, cpuSeconds: ticks / CLOCK_TICKS, peakMiB: peak, readBytes, code, stdout, stderr }); });
  });
}
