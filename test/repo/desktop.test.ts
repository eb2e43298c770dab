import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { quoteExecArg, removeDesktopEntries, writeDesktopEntries } from '../../src/repo/index.js';
import { MedvError } from '../../src/core/errors.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;

/** The value of `key=` in a desktop entry's text. */
const valueOf = (text: string, key: string) => text.split('\n').find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);

/** Undo the spec's string escapes (\\s \\n \\t \\r \\\\). */
const unescapeValue = (v: string) => v.replace(/\\(.)/g, (_m, ch: string) => ({ s: ' ', n: '\n', t: '\t', r: '\r', '\\': '\\' } as Record<string, string>)[ch] ?? `\\${ch}`);

/** Split an unescaped Exec value into arguments per the spec's quoting rules. */
function execArgs(v: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < v.length) {
    if (v[i] === ' ') { i++; continue; }
    let arg = '';
    if (v[i] === '"') {
      i++;
      while (v[i] !== '"') {
        if (v[i] === '\\') i++;
        arg += v[i++];
      }
      i++;
    } else {
      while (i < v.length && v[i] !== ' ') arg += v[i++];
    }
    out.push(arg.replace(/%%/g, '%'));
  }
  return out;
}

describe('repo: desktop entries', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'medv-repo-desktop-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('writes one entry per app running `medv workspace run` with the client root and display, quoted per the spec; hostile titles and paths stay data', () => {
    const medv = '/opt/my tools/medv "beta"$HOME\\x%u`id`';
    const root = "/var/lib/my medv/it's=50% $(rm -rf ~);#<>|&*?~\\t";
    const paths = writeDesktopEntries({ id: 'Win7', workspace: 'Win7', clientRoot: root }, [
      { name: 'word', title: 'Word "2010" for Ops %f', argv: ['C:\\Program Files\\winword.exe'], icon: 'winword' },
      { name: 'evil', title: 'Evil\nExec=rm -rf ~', argv: ['x'] },
      { name: 'Word', argv: ['dup'] },
    ], { medv, dir });
    assert.deepEqual(paths.map((p) => p.slice(dir.length + 1)), [
      'medv-Win7-word.desktop', 'medv-Win7-evil.desktop', 'medv-Win7-word-2.desktop',
    ]);
    const text = fs.readFileSync(paths[0], 'utf8');
    assert.equal(text.split('\n')[0], '[Desktop Entry]');
    assert.equal(valueOf(text, 'Name'), 'Word "2010" for Ops %f');
    assert.equal(valueOf(text, 'Icon'), 'winword');
    assert.equal(valueOf(text, 'X-Medv-Instance'), 'Win7');
    assert.equal(valueOf(text, 'X-Medv-Workspace'), 'Win7');
    assert.equal(valueOf(text, 'X-Medv-Application'), 'word');
    const exec = unescapeValue(valueOf(text, 'Exec')!);
    assert.deepEqual(execArgs(exec), [medv, 'workspace', 'run', '--client-root', root, '--display', 'window', 'Win7', 'word']);
    // per the spec: outside quotes no reserved character and no lone '%' (a field code a launcher would expand)
    const unquoted = exec.replace(/"(?:[^"\\]|\\.)*"/g, '');
    assert.doesNotMatch(unquoted, /["'\\><~|&;$*?#()`=]/);
    assert.doesNotMatch(exec.replace(/%%/g, ''), /%/);
    // inside quotes only the four escapable characters follow a backslash
    for (const q of exec.match(/"(?:[^"\\]|\\.)*"/g)!) assert.doesNotMatch(q.replace(/\\["`$\\]/g, ''), /\\/);
    assert.equal(valueOf(fs.readFileSync(paths[2], 'utf8'), 'Name'), 'Word');
    // a newline in a title cannot add a key
    const evil = fs.readFileSync(paths[1], 'utf8');
    assert.equal(evil.split('\n').filter((l) => l.startsWith('Exec=')).length, 1);
    assert.equal(valueOf(evil, 'Name'), 'Evil Exec=rm -rf ~');
    assert.equal(quoteExecArg('/usr/bin/medv'), '/usr/bin/medv');
    assert.equal(quoteExecArg('a b'), '"a b"');
    assert.equal(quoteExecArg('50%'), '50%%');
    assert.equal(quoteExecArg('a=b'), '"a=b"');
    assert.equal(quoteExecArg(''), '""');
    assert.equal(quoteExecArg('$`"\\'), '"\\$\\`\\"\\\\"');
  });

  it('an application name outside the name rules is refused before anything is written', () => {
    for (const name of ['../x', 'a b', 'x\nExec=evil', '', '-rf', 'é']) {
      assert.throws(() => writeDesktopEntries({ id: 'ws', workspace: 'desk', clientRoot: '/r' }, [{ name, argv: ['x'] }], { medv: 'medv', dir }), code('EINVAL_ARG'), name);
    }
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('rewriting drops stale entries of that instance only; removal touches only ours', () => {
    const ws = { id: 'ws', workspace: 'desk', clientRoot: '/r1' };
    writeDesktopEntries(ws, [{ name: 'A', argv: ['a'] }, { name: 'B', argv: ['b'] }], { medv: 'medv', dir });
    writeDesktopEntries({ id: 'ws-b', workspace: 'desk', clientRoot: '/r2' }, [{ name: 'A', argv: ['a'] }], { medv: 'medv', dir });
    // someone else's files, one looking like ours
    fs.writeFileSync(join(dir, 'medv-ws-c.desktop'), '[Desktop Entry]\nName=not ours\n');
    fs.writeFileSync(join(dir, 'firefox.desktop'), '[Desktop Entry]\nX-Medv-Instance=ws\n');
    const target = join(dir, 'target.desktop');
    fs.writeFileSync(target, '[Desktop Entry]\nX-Medv-Instance=ws\n');
    fs.symlinkSync(target, join(dir, 'medv-ws-link.desktop'));
    writeDesktopEntries(ws, [{ name: 'A', argv: ['a'] }], { medv: 'medv', dir });
    assert.deepEqual(fs.readdirSync(dir).sort(), [
      'firefox.desktop', 'medv-ws-a.desktop', 'medv-ws-b-a.desktop', 'medv-ws-c.desktop', 'medv-ws-link.desktop', 'target.desktop',
    ]);
    assert.deepEqual(removeDesktopEntries(ws, { dir }), [join(dir, 'medv-ws-a.desktop')]);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['firefox.desktop', 'medv-ws-b-a.desktop', 'medv-ws-c.desktop', 'medv-ws-link.desktop', 'target.desktop']);
    // a file under one of our names that is not ours is never replaced
    assert.throws(() => writeDesktopEntries(ws, [{ name: 'C', argv: ['c'] }], { medv: 'medv', dir }), code('EEXIST'));
    assert.equal(fs.readFileSync(join(dir, 'medv-ws-c.desktop'), 'utf8'), '[Desktop Entry]\nName=not ours\n');
    assert.throws(() => writeDesktopEntries({ ...ws, id: '../x' }, [], { medv: 'medv', dir }), code('EINVAL_ARG'));
    assert.throws(() => writeDesktopEntries({ ...ws, clientRoot: 'relative' }, [], { medv: 'medv', dir }), code('EINVAL_ARG'));
  });
});
