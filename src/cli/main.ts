#!/usr/bin/env node
/** The `medv` command: one file per noun; each action calls one library function. */
import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { diskCommand } from './disk.js';
import { demoCommand } from './demo.js';
import { vmCommand } from './vm.js';
import { imageCommand } from './image.js';
import { serveCommand } from './serve.js';
import { adminCommand } from './admin.js';
import { loginCommand } from './login.js';
import { exitStatusFor, reportError } from './common.js';

function version(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const p of [join(here, '../../package.json'), join(here, '../../../package.json')]) {
    try { return JSON.parse(readFileSync(p, 'utf8')).version; } catch { /* next */ }
  }
  return '0.0.0';
}

export function buildProgram(): Command {
  const program = new Command('medv')
    .description('medv: managed, encrypted desktop VMs on Linux (QEMU/KVM)')
    .version(version())
    .showHelpAfterError('(run with --help for usage)')
    .enablePositionalOptions() // `medv image pack … --version N` is the image's version, not medv's
    .exitOverride();
  program.addCommand(diskCommand());
  program.addCommand(vmCommand());
  program.addCommand(demoCommand());
  program.addCommand(imageCommand());
  program.addCommand(serveCommand());
  program.addCommand(adminCommand());
  program.addCommand(loginCommand());
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  for (const c of allCommands(program)) c.exitOverride();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    reportError(e, argv.includes('--json'));
    return exitStatusFor(e);
  }
}

function allCommands(c: Command): Command[] {
  return [c, ...c.commands.flatMap((sub) => allCommands(sub))];
}

const isEntry = process.argv[1] && fileURLToPath(import.meta.url) === (await import('node:fs')).realpathSync(process.argv[1]);
if (isEntry) {
  main(process.argv).then((code) => { process.exitCode = code; });
}
