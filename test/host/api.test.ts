/**
 * The host API (src/host/service) against its document, docs/host-api.yaml, with a real service,
 * real supervisors and real QEMU (the nasm guest): every route the server has is in the document
 * and every documented path is a route; every answer the tests get (errors and events included)
 * fits the document's schemas; a VM's whole life over the API; the event stream's cursor.
 */
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { freshGuestImage } from '../helpers/qemu.js';
import { tempDir, waitForPidExit } from '../helpers/cli.js';
import { checkedApi, documentedRoutes, startHost, type CheckedApi } from '../helpers/hostapi.js';
import { hostRoutes } from '../../src/host/service/routes.js';
import type { RouteDeps } from '../../src/host/service/routes.js';
import { lockRunDir } from '../../src/host/vmlock.js';
import { createHostKey } from '../../src/crypto/index.js';

describe('host API: the routes and docs/host-api.yaml', () => {
  it('every route the service has is documented, and every documented path is a route', () => {
    const served = hostRoutes({} as RouteDeps).map((r) => `${r.method} ${r.path}`).sort();
    assert.deepEqual(served, documentedRoutes());
  });
});

describe('host API: a VM over HTTP on the unix socket (real service, real QEMU)', function () {
  this.timeout(180_000);
  let dir: ReturnType<typeof tempDir>;
  let host: ChildProcess;
  let api: CheckedApi;
  let run: string;

  before(async () => {
    dir = tempDir('host-api');
    run = join(dir.path, 'run');
    host = await startHost({ MEDV_RUN_DIR: run }, ['--pool', '1']);
    api = checkedApi(join(run, 'host.sock'));
  });
  after(async () => {
    host.kill('SIGTERM');
    await waitForPidExit(host.pid!);
    await dir.cleanup();
  });

  it('start, events (state and serial lines), status, list, pause, resume, screenshot, serial, suspend, resume, stop, delete', async () => {
    const img = freshGuestImage(dir.path, 'a.img');
    const status = await api.json('GET', '/v1/host');
    assert.equal(status.pool.size, 1);
    // Follow the events first, so that nothing of the start is missed.
    let cursor = 0;
    const ready = api.events('vm=a', (e) => e.type === 'serial' && /MEDV-GUEST ready/.test(e.line), { ready: (c) => { cursor = c; } });
    await new Promise((r) => setTimeout(r, 50));
    const started = await api.json('POST', '/v1/vms', { source: img, name: 'a', memoryMiB: 32 }, 201);
    assert.equal(started.state, 'running');
    assert.equal(started.key, 'none');
    const seen = await ready;
    assert.ok(seen.some((e) => e.type === 'state' && e.state === 'running'), 'a state event says running');
    assert.ok(seen.every((e, i) => i === 0 || e.cursor > seen[i - 1].cursor), 'cursors grow');
    assert.ok(seen[0].cursor > cursor, 'events after the cursor the stream began at');
    // Replay: what came after the cursor, again, from the buffer.
    const replay = await api.events(`since=${cursor}&vm=a`, (e) => e.cursor === seen.at(-1).cursor);
    assert.deepEqual(replay.map((e) => e.cursor), seen.map((e) => e.cursor));
    assert.equal((await api.json('GET', '/v1/vms/a')).state, 'running');
    assert.deepEqual((await api.json('GET', '/v1/vms')).map((s: { name: string }) => s.name), ['a']);
    assert.equal((await api.json('POST', '/v1/vms/a/pause')).state, 'paused');
    assert.equal((await api.json('POST', '/v1/vms/a/resume')).state, 'running');
    const png = await api.raw('GET', '/v1/vms/a/screenshot');
    assert.equal(png.status, 200);
    assert.equal(png.type, 'image/png');
    assert.ok(png.body.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), 'a PNG');
    const serial = await api.raw('GET', '/v1/vms/a/serial');
    assert.match(serial.body.toString('latin1'), /MEDV-GUEST boot=1\r?\n/);
    // Suspend needs a key: a one-time handle for the passphrase.
    const refused = await api.json('POST', '/v1/vms/a/suspend', undefined, 409);
    assert.equal(refused.error.code, 'ENOKEY');
    assert.equal((await api.json('POST', '/v1/vms/a/stop', { force: true })).state, 'stopped');
    const handle = JSON.parse((await api.raw('POST', '/v1/keys', Buffer.from('pass phrase'), { 'content-type': 'application/octet-stream' })).body.toString());
    assert.match(handle.handle, /^[0-9a-f]{32}$/);
    const again = await api.json('POST', '/v1/vms/a/start', { key: { handle: handle.handle } });
    assert.equal(again.key, 'passphrase');
    const used = await api.json('POST', '/v1/vms/a/start', { key: { handle: handle.handle } }, 409);
    assert.equal(used.error.code, 'ENOKEY', 'a handle is good for one request');
    await api.events('vm=a&since=0', (e) => e.type === 'serial' && /boot=2/.test(e.line ?? ''));
    const suspended = await api.json('POST', '/v1/vms/a/suspend');
    assert.equal(suspended.state, 'suspended');
    const h2 = JSON.parse((await api.raw('POST', '/v1/keys', Buffer.from('pass phrase'), { 'content-type': 'application/octet-stream' })).body.toString());
    const resumed = await api.json('POST', '/v1/vms/a/start', { key: { handle: h2.handle } });
    assert.equal(resumed.resumed, true);
    assert.equal((await api.json('POST', '/v1/vms/a/stop', { timeoutS: 30 })).exitReason, 'poweroff');
    const busy = await api.json('DELETE', '/v1/vms/a');
    assert.deepEqual(busy, { removed: 'a' });
    await api.json('GET', '/v1/vms/a', undefined, 404);
  });

  it('suspend, then a start at once: the run folder is free when the suspend answers; a start that finds the last run\'s supervisor still holding it waits, and resumes the guest', async () => {
    const img = freshGuestImage(dir.path, 'w.img');
    const hostKey = join(dir.path, 'w.key');
    await createHostKey(hostKey);
    await api.json('POST', '/v1/vms', { source: img, name: 'w', memoryMiB: 32, key: { hostKey } }, 201);
    await api.events('vm=w&since=0', (e) => e.type === 'serial' && /MEDV-GUEST ready/.test(e.line ?? ''));
    assert.equal((await api.json('POST', '/v1/vms/w/suspend')).state, 'suspended');
    // Free once answered: taken here at once (EBUSY would throw). Held, it stands for a supervisor
    // that recorded its end and has not let the lock go yet.
    const lock = lockRunDir(join(run, 'w'), 'w');
    let sawWait!: () => void;
    const waited = new Promise<string>((r) => { sawWait = () => r('waited'); });
    const onLog = (d: Buffer) => { if (/VM w: waiting for the supervisor of its last run/.test(String(d))) sawWait(); };
    host.stderr!.on('data', onLog);
    // The pool's member of this shape, started after the answer: the test ends only once it is up
    // (one still starting when the service is stopped would race the folder's removal).
    let following!: () => void;
    const followed = new Promise<void>((r) => { following = r; });
    const poolBack = api.events('', (e) => e.type === 'service' && e.what === 'pool' && e.incoming === false, { ready: () => following() });
    await followed;
    const start = api.json('POST', '/v1/vms', { source: img, name: 'w', key: { hostKey } }, 201);
    start.catch(() => undefined);
    const first = await Promise.race([waited, start.then(() => 'answered', (e: Error) => `refused: ${e.message}`)]);
    closeSync(lock);
    host.stderr!.off('data', onLog);
    assert.equal(first, 'waited', 'the start waits for the run folder instead of answering EBUSY');
    const resumed = await start;
    assert.equal(resumed.state, 'running');
    assert.equal(resumed.resumed, true);
    const serial = (await api.raw('GET', '/v1/vms/w/serial')).body.toString('latin1');
    assert.doesNotMatch(serial, /MEDV-GUEST boot=2/, 'the guest was resumed, not booted again');
    assert.equal((await api.json('POST', '/v1/vms/w/stop', { force: true })).state, 'stopped');
    await poolBack;
  });

  it('refusals are typed errors the document describes, and the service goes on serving', async () => {
    const img = freshGuestImage(dir.path, 'b.img');
    assert.equal((await api.json('GET', '/v1/vms/ghost', undefined, 404)).error.code, 'ENOENT');
    assert.equal((await api.json('GET', '/v1/vms/..%2Fx', undefined, 400)).error.code, 'EINVAL_ARG');
    assert.equal((await api.json('POST', '/v1/vms', { source: img, colour: 'red' }, 400)).error.code, 'EINVAL_ARG');
    assert.equal((await api.json('POST', '/v1/vms', { source: 'relative.img' }, 400)).error.code, 'EINVAL_ARG');
    assert.equal((await api.json('POST', '/v1/vms', { source: join(dir.path, 'missing.img') }, 404)).error.code, 'ENOENT');
    const notJson = await api.raw('POST', '/v1/vms', Buffer.from('{"source":'), { 'content-type': 'application/json' });
    assert.equal(notJson.status, 400);
    const text = await api.raw('POST', '/v1/vms', Buffer.from('source=x'), { 'content-type': 'text/plain' });
    assert.equal(text.status, 400);
    const big = await api.raw('POST', '/v1/vms', Buffer.alloc(70 * 1024, 0x20), { 'content-type': 'application/json' });
    assert.equal(big.status, 413);
    const bigKey = await api.raw('POST', '/v1/keys', Buffer.alloc(5000, 0x41), { 'content-type': 'application/octet-stream' });
    assert.equal(bigKey.status, 413);
    const badSince = await api.raw('GET', '/v1/events?since=-1');
    assert.equal(badSince.status, 400);
    assert.equal((await api.json('GET', '/v1/host')).pid, host.pid);
  });
});
