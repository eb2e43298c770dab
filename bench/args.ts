/** Command-line plumbing shared by the benchmarks. */
import { mkdirSync, rmSync } from 'node:fs';

/** The value after `--name` on the command line, else `def`. */
export function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

/** `dir`, emptied: a benchmark's own work folder (named by `--dir` or its default). */
export function freshDir(dir: string): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}
