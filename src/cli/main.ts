#!/usr/bin/env node
/** The `medv` command: one file per noun; each action calls one library function. */
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { EXIT_USAGE, exitStatusFor, exitStatuses, finishLeaves, passesThrough, leafCommands, reportError } from './common.js';

/**
 * The nouns, in help order, each loaded only when needed: `medv vm start` loads the vm module and
 * nothing of disks, images or the demo (start-up time is part of the VM start benchmark).
 */
const NOUNS: Record<string, () => Promise<Command>> = {
  disk: async () => (await import('./disk.js')).diskCommand(),
  vm: async () => (await import('./vm.js')).vmCommand(),
  host: async () => (await import('./host.js')).hostCommand(),
  demo: async () => (await import('./demo.js')).demoCommand(),
  image: async () => (await import('./image.js')).imageCommand(),
  serve: async () => (await import('./serve.js')).serveCommand(),
  admin: async () => (await import('./admin.js')).adminCommand(),
  login: async () => (await import('./login.js')).loginCommand(),
  workspace: async () => (await import('./workspace.js')).workspaceCommand(),
  logs: async () => (await import('./logs.js')).logsCommand(),
};

function version(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [join(here, '../../package.json'), join(here, '../../../package.json')]) {
    try { return JSON.parse(readFileSync(p, 'utf8')).version; } catch { /* next */ }
  }
  return '0.0.0';
}

/** The program with every noun, or only `noun` when it names one (what `main` runs). */
export async function buildProgram(noun?: string): Promise<Command> {
  const program = new Command('medv')
    .description('medv: managed, encrypted desktop VMs on Linux (QEMU/KVM)')
    .version(version())
    .showHelpAfterError('(run with --help for usage)')
    .enablePositionalOptions() // `medv image pack … --version N` is the image's version, not medv's
    .exitOverride();
  const only = noun !== undefined && Object.hasOwn(NOUNS, noun) ? [noun] : Object.keys(NOUNS);
  for (const c of await Promise.all(only.map((n) => NOUNS[n]()))) program.addCommand(c);
  finishLeaves(program);
  return program;
}

/** `{"disk create": [0, 1, 2, 3, …], …}`: the exit statuses each leaf's --help lists, 0-255 for one that passes its application's through (tests check every run against it). */
export async function exitStatusTable(): Promise<Record<string, number[]>> {
  return Object.fromEntries(leafCommands(await buildProgram()).map(({ path, cmd }) => [path.join(' '), passesThrough(cmd) ? Array.from({ length: 256 }, (_, i) => i) : exitStatuses(cmd)]));
}

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  let program: Command | undefined;
  try {
    program = await buildProgram(argv[2]);
    for (const c of allCommands(program)) {
      c.exitOverride();
      // A usage error is reported below, once, in the shape of every other error.
      c.configureOutput({ outputError: () => undefined });
      c.showHelpAfterError(false);
    }
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return 0;
      // commander.help: a noun without its verb (the help went to stderr); the rest are usage errors.
      const path = program ? commandPath(program, argv.slice(2)) : [];
      const help = `see ${['medv', ...path].join(' ')} --help`;
      const what = e.code === 'commander.help' ? `${path.join(' ') || 'medv'} needs a command` : e.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ');
      const message = `${what} (${help})`;
      reportError(new MedvError('EINVAL_ARG', message, { usage: e.code }), json);
      return EXIT_USAGE;
    }
    reportError(e, json);
    return exitStatusFor(e);
  }
}

/** The names of the commands `args` reaches (`disk undo create`), options and operands left out. */
function commandPath(program: Command, args: string[]): string[] {
  const path: string[] = [];
  let c = program;
  for (const a of args) {
    const sub = c.commands.find((s) => s.name() === a || s.aliases().includes(a));
    if (!sub) { if (!a.startsWith('-')) break; continue; }
    path.push(sub.name());
    c = sub;
  }
  return path;
}

function allCommands(c: Command): Command[] {
  return [c, ...c.commands.flatMap((sub) => allCommands(sub))];
}

const isEntry = process.argv[1] && fileURLToPath(import.meta.url) === (await import('node:fs')).realpathSync(process.argv[1]);
if (isEntry) {
  main(process.argv).then((code) => { process.exitCode = code; });
}
