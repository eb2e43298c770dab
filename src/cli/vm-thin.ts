/**
 * The short path of bin/medv for the plain forms of `medv vm start|stop|suspend|list`: the command
 * line is read here, without commander and without the other nouns, and the same code as
 * src/cli/vm.ts's runs (./vm-actions.ts). A VM's start or resume is timed from this command's
 * own start-up (bench/lifecycle), and commander with the CLI's module graph was ~50–90 ms of it.
 *
 * It takes only what it fully understands: the verbs below, their options spelled `--opt value`
 * (each at most once) with a value the long path would accept, and the right number of operands.
 * Anything else (`--help`, `--opt=value`, a repeated or unknown option, a bad value, `--`) returns
 * undefined and the long path (./main.ts) runs, which reports usage errors as always.
 */
import { MedvError } from '../core/errors.js';
import { exitStatusFor, reportError } from './report.js';
import { positiveInt, vmList, vmStart, vmStop, vmSuspend, type Opts } from './vm-actions.js';

/** For each option: a flag (true), or how its value is checked (a bad one: the long path says why). */
type OptionSpec = Record<string, true | ((v: string) => unknown)>;
const choices = (...ok: string[]) => (v: string) => { if (!ok.includes(v)) throw new MedvError('EINVAL_ARG', v); return v; };
const text = (v: string) => v;

const VERBS: Record<string, { operands: number; options: OptionSpec; run: (operands: string[], o: Opts) => Promise<void> }> = {
  start: {
    operands: 1,
    options: {
      name: text, memory: positiveInt('--memory'), 'read-only': true, undo: true, network: choices('none', 'nat'),
      'disk-bus': choices('ide', 'virtio'), display: choices('none', 'vnc', 'vnc-tcp', 'window'), accel: choices('kvm', 'tcg'),
      'host-key': text, 'passphrase-file': text, json: true,
    },
    run: ([disk], o) => vmStart(disk, { display: 'none', ...o }),
  },
  stop: { operands: 1, options: { force: true, json: true }, run: ([name], o) => vmStop(name, { timeout: 30_000, ...o }) },
  suspend: { operands: 1, options: { json: true }, run: ([name], o) => vmSuspend(name, o) },
  list: { operands: 0, options: { json: true }, run: (_, o) => vmList(o) },
};

/** `--disk-bus` → `diskBus`, as commander names it. */
const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** The command line as the long path would read it, or undefined when only the long path should. */
function parse(args: string[]): { verb: (typeof VERBS)[string]; operands: string[]; o: Opts } | undefined {
  const verb = Object.hasOwn(VERBS, args[0] ?? '') ? VERBS[args[0]] : undefined;
  if (!verb) return undefined;
  const operands: string[] = [];
  const o: Opts = {};
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('-')) { operands.push(a); continue; }
    const name = a.slice(2);
    if (!a.startsWith('--') || !Object.hasOwn(verb.options, name)) return undefined;
    const key = camel(name);
    if (Object.hasOwn(o, key)) return undefined;
    const spec = verb.options[name];
    if (spec === true) { o[key] = true; continue; }
    const v = args[++i];
    if (v === undefined || v.startsWith('-')) return undefined;
    try { o[key] = spec(v); } catch { return undefined; }
  }
  if (operands.length !== verb.operands) return undefined;
  return { verb, operands, o };
}

/** Run `argv` (process.argv) when it is a plain `vm start|stop|suspend|list`; undefined otherwise. */
export function thinMain(argv: string[]): Promise<number> | undefined {
  if (argv[2] !== 'vm') return undefined;
  const p = parse(argv.slice(3));
  if (!p) return undefined;
  return p.verb.run(p.operands, p.o).then(
    () => (typeof process.exitCode === 'number' ? process.exitCode : 0),
    (e: unknown) => { reportError(e, Boolean(p.o.json)); return exitStatusFor(e); },
  );
}
