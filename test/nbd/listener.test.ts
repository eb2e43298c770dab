/**
 * bindNbd: a socket that listens before there is a disk. Clients that connect early wait, with
 * nothing sent to them, until serve(); close() before serve() disconnects them and removes the socket.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MemoryDevice } from '../../src/block/memory.js';
import { bindNbd, type NbdListener } from '../../src/nbd/server.js';

const run = promisify(execFile);

describe('nbd: bindNbd (listen first, serve later)', function () {
  this.timeout(30_000);
  let dir: string;
  let sock: string;
  let listener: NbdListener | undefined;
  let waits: Array<() => void>;
  const log = (line: string) => { if (/waits/.test(line)) waits.shift()?.(); };
  const nextWait = () => new Promise<void>((r) => waits.push(r));

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'medv-nbdl-'));
    sock = join(dir, 'nbd.sock');
    waits = [];
  });
  afterEach(async () => {
    await listener?.close();
    listener = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  /** A raw client that records what it received and when it ended. */
  function rawClient(): { socket: Socket; received: () => Buffer; ended: Promise<void> } {
    const chunks: Buffer[] = [];
    const socket = connect(sock);
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => undefined);
    const ended = new Promise<void>((r) => socket.once('close', () => r()));
    return { socket, received: () => Buffer.concat(chunks), ended };
  }

  it('a client that connected before serve() gets nothing until then, then the greeting; qemu-img reads the device', async () => {
    listener = await bindNbd(sock, { log });
    const waiting = nextWait();
    const early = rawClient();
    await waiting;
    assert.equal(early.received().length, 0, 'nothing is sent before there is a disk');
    const src = randomBytes(1 << 20);
    const greeted = new Promise<void>((r) => early.socket.once('data', () => r()));
    listener.serve(MemoryDevice.from(src), { readOnly: true });
    await greeted;
    assert.equal(early.received().subarray(0, 8).toString('latin1'), 'NBDMAGIC');
    early.socket.destroy();
    const out = join(dir, 'out.raw');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///?socket=${sock}`, out]);
    assert.ok(readFileSync(out).equals(src));
  });

  it('close() before serve() disconnects waiting clients without a byte and removes the socket', async () => {
    listener = await bindNbd(sock, { log });
    const waiting = nextWait();
    const early = rawClient();
    await waiting;
    await listener.close();
    await early.ended;
    assert.equal(early.received().length, 0);
    assert.equal(existsSync(sock), false);
    listener = undefined;
  });
});
