/**
 * src/core/jsonlines.ts and every protocol that reads lines through it: a peer that sends an
 * over-long line (or keeps sending without a newline) is refused with a bounded buffer, for the
 * control client (host/protocol.ts), the supervisor's control socket (a real VM), QMP against a
 * hostile "QEMU" and the supervisor's start answer on fd 3.
 */
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { JsonLineReader, LineReader, MAX_LINE } from '../../src/core/jsonlines.js';
import { MedvError } from '../../src/core/errors.js';
import { controlRequest } from '../../src/host/protocol.js';
import { readStartAnswer, MAX_START_ANSWER, type StartAnswer } from '../../src/host/client.js';
import { QmpClient, QMP_MAX_EVENTS, QMP_MAX_LINE } from '../../src/hypervisor/qmp.js';
import { freshGuestImage } from '../helpers/qemu.js';
import { runMedv, tempDir } from '../helpers/cli.js';

/** A unix-socket peer that runs `talk` for each connection. */
async function hostilePeer(path: string, talk: (s: Socket) => void): Promise<Server> {
  const server = createServer(talk);
  await new Promise<void>((res) => server.listen(path, res));
  return server;
}

describe('core/jsonlines', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('jsonlines'); });
  afterEach(() => dir.cleanup());

  it('LineReader: lines of exactly max bytes pass, one byte more is refused once; nothing past the bound is held', () => {
    const lines: string[] = [];
    let overflows = 0;
    const r = new LineReader((l) => lines.push(l), () => overflows++, 8);
    r.push('12345678\nab');
    r.push(Buffer.from('c\n\n  \né'));
    r.push('\n');
    assert.deepEqual(lines, ['12345678', 'abc', 'é']);
    r.push('1234');
    r.push('56789'); // 9 bytes without a newline: refused before the newline comes
    assert.equal(overflows, 1);
    assert.equal(r.pending, 0);
    r.push('\nok\n');
    assert.deepEqual(lines, ['12345678', 'abc', 'é'], 'nothing is read after an overflow');
    assert.equal(overflows, 1);
    // A huge stream without a newline never holds more than the bound.
    const big = new LineReader(() => assert.fail('no line'), () => undefined, MAX_LINE);
    for (let i = 0; i < 16 && big.pending <= MAX_LINE; i++) big.push(Buffer.alloc(8192, 0x41));
    assert.ok(big.pending <= MAX_LINE);
  });

  it('JsonLineReader: values out; a line that is not JSON or too long is EPROTO', () => {
    const got: unknown[] = [];
    const errors: string[] = [];
    const r = new JsonLineReader((v) => got.push(v), (e, kind) => { errors.push(`${kind}: ${e.code}`); return kind === 'not-json'; }, 'a peer', 16);
    r.push('{"a":1}\nnope\n[2]\n');
    r.push(`"${'x'.repeat(20)}"\n{"b":3}\n`);
    assert.deepEqual(got, [{ a: 1 }, [2]]);
    assert.deepEqual(errors, ['not-json: EPROTO', 'too-long: EPROTO']);
  });

  it('the control client refuses a supervisor that sends an over-long line (EPROTO), and one that is not JSON', async () => {
    const sock = join(dir.path, 'control.sock');
    const server = await hostilePeer(sock, (s) => { s.on('error', () => undefined); s.write(Buffer.alloc(MAX_LINE + 1, 0x20)); });
    try {
      await assert.rejects(controlRequest(sock, 'status', {}, 30_000), (e: unknown) => e instanceof MedvError && e.code === 'EPROTO' && /longer than 65536 bytes/.test(e.message));
    } finally {
      server.close();
    }
    const sock2 = join(dir.path, 'control2.sock');
    const server2 = await hostilePeer(sock2, (s) => { s.on('error', () => undefined); s.write('not json\n'); });
    try {
      await assert.rejects(controlRequest(sock2, 'status', {}, 30_000), (e: unknown) => e instanceof MedvError && e.code === 'EPROTO' && /not JSON/.test(e.message));
    } finally {
      server2.close();
    }
  });

  it('QMP: a hostile QEMU\'s endless events are kept bounded; an over-long line disconnects it; commands fail instead of memory growing', async () => {
    const sock = join(dir.path, 'qmp.sock');
    let sent = 0;
    const server = await hostilePeer(sock, (s) => {
      s.on('error', () => undefined);
      s.write('{"QMP": {"version": {}, "capabilities": []}}\n');
      s.on('data', (d) => {
        for (const line of d.toString().split('\n').filter(Boolean)) {
          const { id, execute } = JSON.parse(line) as { id: number; execute: string };
          if (execute === 'qmp_capabilities') { s.write(`{"return": {}, "id": ${id}}\n`); continue; }
          if (execute === 'query-status') {
            s.write(Array.from({ length: 3000 }, (_, i) => `{"event": "E", "data": {"i": ${i}}}\n`).join(''));
            s.write(`{"return": {"status": "running"}, "id": ${id}}\n`);
            continue;
          }
          // An event without end: 4 MiB and counting, no newline.
          const chunk = Buffer.alloc(64 * 1024, 0x61);
          chunk.write('{"event": "X", "data": "', 0);
          const pump = () => { while (sent < 4 * QMP_MAX_LINE && s.write(chunk)) sent += chunk.length; if (sent < 4 * QMP_MAX_LINE) s.once('drain', pump); };
          pump();
        }
      });
    });
    try {
      const qmp = await QmpClient.connect(sock, 10_000);
      assert.deepEqual(await qmp.execute('query-status'), { status: 'running' });
      assert.equal(qmp.events.length, QMP_MAX_EVENTS);
      assert.equal(qmp.events[QMP_MAX_EVENTS - 1].data?.i, 2999);
      await assert.rejects(qmp.execute('query-block'), (e: unknown) => e instanceof MedvError && /longer than 1048576 bytes/.test(e.message));
      assert.equal(qmp.closed, true);
      assert.ok(sent < 4 * QMP_MAX_LINE, `the client stopped reading: ${sent} bytes sent`);
    } finally {
      server.close();
    }
  });

  it('the supervisor\'s start answer on fd 3: one bounded JSON line', () => {
    const answers: StartAnswer[] = [];
    const ok = new PassThrough();
    readStartAnswer(ok, (a) => answers.push(a));
    ok.write('{"ok": true, "state": {"name": "x"}}\n{"ok": false}\n');
    const long = new PassThrough();
    readStartAnswer(long, (a) => answers.push(a));
    for (let i = 0; i <= MAX_START_ANSWER / 65536; i++) long.write(Buffer.alloc(65536, 0x20));
    const bad = new PassThrough();
    readStartAnswer(bad, (a) => answers.push(a));
    bad.write('hello\n');
    assert.equal(answers.length, 3);
    assert.deepEqual(answers[0], { ok: true, state: { name: 'x' } });
    assert.match(answers[1].error!.message, /^the supervisor sent a line longer than 1048576 bytes$/);
    assert.equal(answers[1].error!.code, 'EPROTO');
    assert.match(answers[2].error!.message, /not JSON/);
  });

  it('the supervisor\'s control socket closes a connection that sends an over-long line; the VM keeps answering', async () => {
    const env = { MEDV_RUN_DIR: join(dir.path, 'run') };
    const img = freshGuestImage(dir.path);
    const start = runMedv(['vm', 'start', img, '--name', 'lines', '--memory', '32', '--json'], env);
    assert.equal(start.code, 0, start.stderr);
    try {
      const s = connect(join(env.MEDV_RUN_DIR, 'lines', 'control.sock'));
      s.on('error', () => undefined);
      const closed = new Promise<void>((res) => s.once('close', () => res()));
      await new Promise<void>((res) => s.once('connect', () => res()));
      s.write(Buffer.alloc(MAX_LINE + 1, 0x7b));
      await closed;
      const st = runMedv(['vm', 'status', 'lines', '--json'], env);
      assert.equal(st.code, 0, st.stderr);
      assert.equal(JSON.parse(st.stdout).state, 'running');
    } finally {
      runMedv(['vm', 'stop', 'lines', '--force'], env);
    }
  });
});
