import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DevLog, clientHostKey, openClientRoot, readDevLog, type ClientRoot, type LogRecord } from '../../src/repo/index.js';
import type { KekSource } from '../../src/crypto/kekenv.js';
import { MEDV_BIN, runMedv } from '../helpers/cli.js';

async function all(c: ClientRoot, kek: KekSource): Promise<LogRecord[]> {
  const out: LogRecord[] = [];
  for await (const r of readDevLog(c, kek)) out.push(r);
  return out;
}

/** Resolves once the child's stdout matches `re` (on its data events); rejects on exit or timeout. */
function waitForOutput(child: ChildProcess, re: RegExp, got: { text: string }, timeoutMs = 20_000): Promise<void> {
  return new Promise((res, rej) => {
    const check = () => { if (re.test(got.text)) { cleanup(); res(); } };
    const onExit = (code: number | null) => { cleanup(); rej(new Error(`medv logs exited ${code} before printing ${re}:\n${got.text}`)); };
    const timer = setTimeout(() => { cleanup(); rej(new Error(`no ${re} within ${timeoutMs} ms:\n${got.text}`)); }, timeoutMs);
    const cleanup = () => { clearTimeout(timer); child.stdout!.off('data', check); child.off('exit', onExit); };
    child.stdout!.on('data', check);
    child.on('exit', onExit);
    check();
  });
}

describe('repo: device log', () => {
  let dir: string;
  let c: ClientRoot;
  let kek: KekSource;
  beforeEach(async () => {
    dir = fs.mkdtempSync(join(tmpdir(), 'medv-repo-devlog-'));
    c = openClientRoot(join(dir, 'root'));
    kek = await clientHostKey(c);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('round trips records with fields; the file is 0600 and holds no plaintext', async () => {
    const log = await DevLog.open(c, kek);
    log.append('info', 'workspace started: secret-plaintext-marker', { workspace: 'Win7', version: 3 });
    log.append('error', 'update failed', { code: 'ENETWORK', big: 12n });
    log.close();
    log.append('info', 'after close is ignored');
    const recs = await all(c, kek);
    assert.equal(recs.length, 2);
    assert.equal(recs[0].level, 'info');
    assert.equal(recs[0].message, 'workspace started: secret-plaintext-marker');
    assert.deepEqual(recs[0].fields, { workspace: 'Win7', version: 3 });
    assert.deepEqual(recs[1].fields, { code: 'ENETWORK', big: '12' });
    assert.match(recs[0].at, /^\d{4}-\d\d-\d\dT/);
    const file = join(c.logs, 'devlog.log');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const raw = fs.readFileSync(file);
    for (const s of ['secret-plaintext-marker', 'Win7', 'ENETWORK', 'update failed']) assert.equal(raw.indexOf(s), -1, s);
    assert.equal(log.failures, 0);
  });

  it('rotation is bounded: at most keep old files, each at most maxBytes, the newest records all readable', async () => {
    const maxBytes = 64 * 1024;
    const log = await DevLog.open(c, kek, { maxBytes, keep: 3 });
    const N = 3000;
    for (let i = 0; i < N; i++) log.append('info', `record ${i} ${'x'.repeat(100)}`, { i });
    log.close();
    const names = fs.readdirSync(c.logs).sort();
    assert.deepEqual(names, ['devlog.log', 'devlog.log.1', 'devlog.log.2', 'devlog.log.3']);
    for (const n of names) assert.ok(fs.statSync(join(c.logs, n)).size <= maxBytes, `${n} is ${fs.statSync(join(c.logs, n)).size}`);
    const recs = await all(c, kek);
    assert.ok(recs.every((r) => r.level === 'info'), 'no warnings');
    const idx = recs.map((r) => r.fields!.i as number);
    // a contiguous run ending with the newest record, oldest first
    assert.equal(idx[idx.length - 1], N - 1);
    for (let k = 1; k < idx.length; k++) assert.equal(idx[k], idx[k - 1] + 1);
    assert.ok(idx.length > 3 * (maxBytes / 250), `only ${idx.length} records kept`);
  });

  it('two writers (as two processes would) rotate together: bounded, nothing damaged, both writers\' newest records kept', async () => {
    const a = await DevLog.open(c, kek, { maxBytes: 64 * 1024, keep: 2 });
    const b = await DevLog.open(c, kek, { maxBytes: 64 * 1024, keep: 2 });
    for (let i = 0; i < 1500; i++) (i % 2 ? b : a).append('info', `w${i % 2} ${i} ${'z'.repeat(80)}`, { i });
    a.close(); b.close();
    assert.deepEqual(fs.readdirSync(c.logs).sort(), ['devlog.log', 'devlog.log.1', 'devlog.log.2']);
    for (const n of fs.readdirSync(c.logs)) assert.ok(fs.statSync(join(c.logs, n)).size <= 64 * 1024);
    const recs = await all(c, kek);
    assert.ok(recs.every((r) => r.level === 'info'));
    const idx = recs.map((r) => r.fields!.i as number);
    assert.deepEqual(idx.slice(-2), [1498, 1499]);
    for (let k = 1; k < idx.length; k++) assert.equal(idx[k], idx[k - 1] + 1);
  });

  it('medv logs refuses a log folder others can write (EUNSAFE, exit 4, one line)', () => {
    fs.chmodSync(c.logs, 0o777);
    const r = runMedv(['logs', '--client-root', c.root]);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /^medv: .*Logs can be written by group or others \(mode 0777\).*\[EUNSAFE\]\n$/);
    assert.equal(r.stdout, '');
  });

  it('a huge record is cut to fit, never over 64 KiB', async () => {
    const log = await DevLog.open(c, kek);
    log.append('warn', 'm'.repeat(200_000), { blob: 'b'.repeat(100_000) });
    log.close();
    assert.ok(fs.statSync(join(c.logs, 'devlog.log')).size <= 64 * 1024);
    const [r] = await all(c, kek);
    assert.equal(r.message.length, 4096);
    assert.deepEqual(r.fields, { truncated: true });
  });

  it('a damaged record is one warn record; the others still read; garbage is skipped too', async () => {
    const log = await DevLog.open(c, kek);
    for (let i = 0; i < 5; i++) log.append('info', `r${i}`);
    log.close();
    const file = join(c.logs, 'devlog.log');
    const raw = fs.readFileSync(file);
    const recLen = raw.length / 5;
    raw[Math.floor(recLen * 2 + recLen / 2)] ^= 0xff; // inside record 2's ciphertext
    fs.writeFileSync(file, Buffer.concat([raw, Buffer.from('garbage that is not a record at all')]));
    const recs = await all(c, kek);
    assert.deepEqual(recs.map((r) => (r.level === 'warn' ? 'WARN' : r.message)), ['r0', 'r1', 'WARN', 'r3', 'r4', 'WARN']);
    assert.equal(recs[2].fields!.file, file);
    assert.equal(recs[2].fields!.offset, recLen * 2);
    // another host key reads nothing but warnings
    const other = openClientRoot(join(dir, 'other'));
    fs.copyFileSync(file, join(other.logs, 'devlog.log'));
    const theirs = [];
    for await (const r of readDevLog(other, await clientHostKey(other))) theirs.push(r);
    assert.ok(theirs.length > 0 && theirs.every((r) => r.level === 'warn'));
  });

  it('medv logs prints the records, --json one object per line', async () => {
    const log = await DevLog.open(c, kek);
    log.append('info', 'hello from the test', { workspace: 'Win 7', n: 1 });
    log.append('error', 'bad\x1b[31m thing');
    log.close();
    const r = runMedv(['logs', '--client-root', c.root]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0], /^\d{4}-\d\d-\d\dT[\d:.]+Z info  hello from the test workspace="Win 7" n=1$/);
    assert.match(lines[1], /Z error bad\\x1b\[31m thing$/); // no raw escape reaches the terminal
    const j = runMedv(['logs', '--json', '--client-root', c.root]);
    assert.equal(j.code, 0, j.stderr);
    const objs = j.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(objs[0].message, 'hello from the test');
    assert.deepEqual(objs[0].fields, { workspace: 'Win 7', n: 1 });
    const h = runMedv(['logs', '--help']);
    assert.match(h.stdout, /devlog\.log/);
    assert.match(h.stdout, /host key/);
  });

  it('medv logs --follow prints a record appended after it started, also across a rotation', async function () {
    this.timeout(60_000);
    const log = await DevLog.open(c, kek, { maxBytes: 64 * 1024, keep: 2 });
    log.append('info', 'before start');
    const child = spawn(process.execPath, [MEDV_BIN, 'logs', '--follow', '--client-root', c.root], { stdio: ['ignore', 'pipe', 'pipe'] });
    const got = { text: '' };
    let err = '';
    child.stdout!.on('data', (d) => { got.text += d; });
    child.stderr!.on('data', (d) => { err += d; });
    try {
      await waitForOutput(child, /before start/, got);
      log.append('warn', 'appended while following');
      await waitForOutput(child, /warn  appended while following/, got);
      // fill past maxBytes: the log rotates, the follower goes on in the new file
      for (let i = 0; i < 400; i++) log.append('info', `filler ${i} ${'y'.repeat(200)}`);
      log.append('info', 'after the rotation');
      assert.ok(fs.existsSync(join(c.logs, 'devlog.log.1')));
      await waitForOutput(child, /after the rotation/, got);
      assert.ok(got.text.includes('filler 399'));
    } finally {
      log.close();
      const exited = new Promise((res) => child.once('exit', res));
      child.kill('SIGINT');
      const codeOrSignal = await exited;
      assert.equal(codeOrSignal, 0, err);
    }
  });
});
