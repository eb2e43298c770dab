/**
 * The one CLI shape (src/cli/README.md): every leaf command accepts --json and lists its exit
 * statuses in --help (generated from the one table in src/cli/common.ts); the commands that used to
 * print nothing print one line; a usage error with --json is JSON on stdout with the usage status.
 * (test/helpers/cli.ts also checks every `runMedv` of the suite against the statuses a help lists.)
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.js';
import { EXIT_MEANING, EXIT_STATUS, exitStatuses, leafCommands } from '../../src/cli/common.js';
import { runMedv, tempDir } from '../helpers/cli.js';


function helpOf(cmd: Command): string {
  let text = '';
  cmd.configureOutput({ writeOut: (s) => { text += s; }, writeErr: (s) => { text += s; } });
  cmd.outputHelp();
  return text;
}

describe('cli: one shape for every command', function () {
  this.timeout(120_000);

  it('every leaf of buildProgram() accepts --json and lists its exit statuses in --help, from the one table', async () => {
    const leaves = leafCommands(await buildProgram());
    assert.ok(leaves.length >= 30, `found ${leaves.length} leaves`);
    for (const { path, cmd } of leaves) {
      const name = path.join(' ');
      assert.ok(cmd.options.some((o) => o.long === '--json'), `medv ${name} has no --json`);
      const help = helpOf(cmd);
      const block = help.slice(help.indexOf('\nExit status'));
      assert.ok(help.includes('\nExit status'), `medv ${name} --help has no exit statuses:\n${help}`);
      const listed = [...block.matchAll(/^ {2}(\d+) +/gm)].map((m) => Number(m[1]));
      assert.deepEqual(listed, exitStatuses(cmd), `medv ${name}: the help lists what the command declares`);
      for (const s of [0, 1, 2]) assert.ok(listed.includes(s), `medv ${name} lists ${s}`);
      // every status a code maps to has its meaning in the table
      for (const s of listed) assert.ok(EXIT_MEANING[s], `status ${s} has a meaning`);
    }
    for (const s of Object.values(EXIT_STATUS)) assert.ok(EXIT_MEANING[s!], `status ${s} of EXIT_STATUS has a meaning`);
  });

  it('the real binary prints the generated statuses (medv disk undo discard --help)', () => {
    const r = runMedv(['disk', 'undo', 'discard', '--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\nExit status:\n {2}0 +success\n/);
    assert.match(r.stdout, /^ {2}9 +in use by another process.*\(EBUSY\)$/m);
    assert.match(r.stdout, /^ {2}5 +not an undo disk \(nothing is deleted\) \(EFORMAT\)/m);
  });

  describe('commands that printed nothing print one line (and JSON with --json)', () => {
    let dir: ReturnType<typeof tempDir>;
    before(() => { dir = tempDir('shape'); });
    after(() => dir.cleanup());

    const oneLine = (args: string[], re: RegExp) => {
      const r = runMedv(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '', 'nothing on stderr');
      assert.equal(r.stdout.split('\n').length, 2, `one line: ${JSON.stringify(r.stdout)}`);
      assert.match(r.stdout, re);
    };
    const json = (args: string[]) => {
      const r = runMedv([...args, '--json']);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    };

    it('disk convert', () => {
      const raw = join(dir.path, 'a.raw');
      writeFileSync(raw, Buffer.alloc(1 << 20, 7));
      oneLine(['disk', 'convert', raw, join(dir.path, 'a.vhd')], /^converted .*a\.raw \(raw\) to .*a\.vhd: dynamic VHD, 1\.0 MiB/);
      const j = json(['disk', 'convert', join(dir.path, 'a.vhd'), join(dir.path, 'b.raw')]);
      assert.deepEqual([j.from, j.to, j.type], ['vhd', 'raw', 'raw']);
      assert.ok(j.virtualSize >= 1 << 20, 'the VHD\'s size, rounded up to whole CHS geometry');
    });

    it('disk undo create, merge and discard', () => {
      const base = join(dir.path, 'base.vhd');
      assert.equal(runMedv(['disk', 'create', base, '--size', '4M']).code, 0);
      const u = join(dir.path, 'u.vhd');
      oneLine(['disk', 'undo', 'create', u, '--parent', base], /^created undo disk .*u\.vhd over .*base\.vhd/);
      oneLine(['disk', 'undo', 'merge', u], /^merged .*u\.vhd into its parent \(.*\) and deleted it\n/);
      assert.deepEqual(json(['disk', 'undo', 'create', u, '--parent', base]), { undo: u, parent: base, encrypted: false });
      oneLine(['disk', 'undo', 'discard', u], /^discarded undo disk .*u\.vhd/);
      json(['disk', 'undo', 'create', u, '--parent', base]);
      assert.deepEqual(json(['disk', 'undo', 'discard', u]), { undo: u, discarded: true });
    });
  });

  describe('a usage error', () => {
    for (const [what, args] of [
      ['a missing required option', ['disk', 'create', 'x.vhd']],
      ['an unknown option', ['disk', 'info', 'x.vhd', '--bogus']],
      ['a missing argument', ['disk', 'undo', 'discard']],
      ['a bad choice', ['disk', 'create', 'x.vhd', '--size', '1M', '--type', 'weird']],
      ['an unknown command', ['disk', 'bogus']],
    ] as const) {
      it(`${what} with --json: {"error":…} on stdout, one line on stderr, exit 2`, () => {
        const r = runMedv([...args, '--json']);
        assert.equal(r.code, 2, r.stdout + r.stderr);
        const body = JSON.parse(r.stdout);
        assert.equal(body.error.code, 'EINVAL_ARG');
        assert.match(body.error.message, /\(see medv disk/);
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
        assert.match(r.stderr, /^medv: .*\[EINVAL_ARG\]\n$/);
      });
    }
    it('without --json: one line on stderr naming the help to read, nothing on stdout', () => {
      const r = runMedv(['disk', 'create', 'x.vhd']);
      assert.equal(r.code, 2);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, "medv: required option '--size <size>' not specified (see medv disk create --help) [EINVAL_ARG]\n");
    });
  });
});
