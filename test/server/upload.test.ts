/**
 * `medv image upload` against `medv serve`, both real processes: the admin token, names and
 * contents checked, nothing visible before it is complete, a cut-off upload resumed without
 * sending everything again, identical re-uploads fine, other bytes refused.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { runMedv, tempDir } from '../helpers/cli.js';
import * as net from 'node:net';
import { curl, header, runMedvAsync, startServe, waitInDir, type ServeProcess } from './helpers.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MiB = 1048576;

describe('server: medv image upload to medv serve', function () {
  this.timeout(90_000);
  const t = tempDir('serve-upload');
  const root = join(t.path, 'repo');
  const images = join(root, 'images');
  const hostKey = join(t.path, 'host.key');
  const keys = join(t.path, 'keys');
  const P = join(t.path, 'PackedImages');
  const P2 = join(t.path, 'Other');
  const state = join(t.path, 'state');
  let s: ServeProcess;
  const pack = (disk: string, name: string, out: string) => {
    const r = runMedv(['image', 'pack', disk, '--name', name, '--version', '1', '--out', out, '--keys', keys, '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
    assert.equal(r.code, 0, r.stderr);
  };
  const upload = (files: string[], extra: string[] = [], onChild?: (c: ChildProcess) => void) => runMedvAsync(['image', 'upload', ...files, '--server', s.url, '--token-file', s.adminTokenFile, '--state-dir', state, '--json', ...extra], onChild);
  const published = () => readdirSync(images).sort();

  before(async () => {
    writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
    // random data does not compress: an 8 MiB pack, many chunks at 64 KiB
    const disk = join(t.path, 'r.raw');
    writeFileSync(disk, Buffer.concat([randomBytes(8 * MiB), Buffer.alloc(2 * MiB)]));
    pack(disk, 'r', P);
    pack(disk, 'r', P2); // same name and version, other salt: other bytes
    const small = join(t.path, 'q.raw');
    writeFileSync(small, Buffer.concat([randomBytes(256 * 1024), Buffer.alloc(768 * 1024)]));
    pack(small, 'q', P);
    s = await startServe(root);
  });
  after(async () => {
    assert.equal(await s.stop(), 0);
    await t.cleanup();
  });

  it('without the admin token, or with a wrong one: 401 and nothing published', async () => {
    const meta = `filename ${Buffer.from('q_1.ckm').toString('base64')}`;
    const tus = ['-X', 'POST', '-H', 'Tus-Resumable: 1.0.0', '-H', 'Upload-Length: 100', '-H', `Upload-Metadata: ${meta}`];
    assert.equal(curl([...tus, `${s.url}/upload/`]).status, 401);
    assert.equal(curl([...tus, '-H', 'Authorization: Bearer not-the-token-at-all', `${s.url}/upload/`]).status, 401);
    assert.equal(curl(['-I', `${s.url}/upload/0123456789abcdef0123456789abcdef`]).status, 401);
    const wrong = join(t.path, 'wrong.token');
    writeFileSync(wrong, 'x'.repeat(40));
    const r = await runMedvAsync(['image', 'upload', join(P, 'q_1.ckm'), '--server', s.url, '--token-file', wrong, '--state-dir', state]);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /^medv: upload of q_1\.ckm refused: the server refused the admin token \(HTTP 401\).*\[EDENIED\]\n$/);
    assert.deepEqual(published(), []);
    assert.deepEqual(readdirSync(join(root, '.uploads')), []);
  });

  it('names and contents are checked: a bad name, a file that is not a pack, an index before its packs are refused', async () => {
    // bad names: refused by the client before sending, and by the server when another client sends them
    const junk = join(t.path, 'notes.bin');
    writeFileSync(junk, randomBytes(1000));
    assert.equal((await upload([junk])).code, 2);
    const token = readFileSync(s.adminTokenFile, 'utf8').trim();
    for (const name of ['../../x_1.ckm', 'x_1.ckm/..', '.x_1.ckm', 'x_01.ckm', 'x_1.vhd']) {
      const r = curl(['-X', 'POST', '-H', 'Tus-Resumable: 1.0.0', '-H', 'Upload-Length: 100', '-H', `Upload-Metadata: filename ${Buffer.from(name).toString('base64')}`, '-H', `Authorization: Bearer ${token}`, `${s.url}/upload/`]);
      assert.equal(r.status, 400, name);
    }
    // a valid name on bytes that are not a pack
    const fake = join(t.path, 'z_1.ckm');
    writeFileSync(fake, randomBytes(5000));
    let r = await upload([fake]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /not a medv pack/);
    // an index whose pack is not published
    r = await upload([join(P, 'q_1.ckm.index')]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /upload the packs first/);
    assert.deepEqual(published(), []);
    assert.deepEqual(readdirSync(join(root, '.uploads')), [], 'refused uploads are removed');
    // given index first on the command line, the client still sends the pack first
    r = await upload([join(P, 'q_1.ckm.index'), join(P, 'q_1.ckm')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).files.map((f: { file: string }) => f.file), ['q_1.ckm', 'q_1.ckm.index']);
    assert.deepEqual(published(), ['q_1.ckm', 'q_1.ckm.index']);
  });

  it('a cut-off upload is not visible; the same command resumes it without sending everything again; served bytes equal the file', async () => {
    const file = join(P, 'r_1.ckm');
    const local = readFileSync(file);
    const size = local.length;
    const from = s.log.length;
    const patches = (since: number) => s.log.slice(since).filter((e) => e.method === 'PATCH');
    let child: ChildProcess | undefined;
    const first = upload([file], ['--chunk-size', '64K'], (c) => { child = c; });
    await s.waitForLog(() => patches(from).filter((e) => e.status === 204).length >= 4);
    // the uploader is mid-way: freeze it, look, then kill it (as a lost connection or a reboot would)
    child!.kill('SIGSTOP');
    assert.ok(!existsSync(join(images, 'r_1.ckm')), 'nothing visible before the upload is complete');
    const partial = readdirSync(join(root, '.uploads')).filter((f) => !f.endsWith('.json'));
    assert.equal(partial.length, 1);
    assert.ok(statSync(join(root, '.uploads', partial[0])).size < size);
    // and its bytes are not served, even to the admin
    const token = readFileSync(s.adminTokenFile, 'utf8').trim();
    const get = curl(['-H', `Authorization: Bearer ${token}`, `${s.url}/upload/${partial[0]}`]);
    assert.equal(get.status, 405);
    assert.ok(!get.body.includes(local.subarray(100, 132)));
    child!.kill('SIGKILL');
    assert.equal((await first).signal, 'SIGKILL');
    assert.ok(!existsSync(join(images, 'r_1.ckm')));
    const receivedFirst = patches(from).reduce((n, e) => n + (e.received ?? 0), 0);
    assert.ok(receivedFirst > 0 && receivedFirst < size, `first run: ${receivedFirst} of ${size}`);

    const again = s.log.length;
    const r = await upload([file], ['--chunk-size', '64K']);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout).files[0];
    assert.equal(res.status, 'published');
    assert.equal(res.resumed, true);
    // counted by the server: the second run sent only what the first had not delivered
    const receivedSecond = patches(again).reduce((n, e) => n + (e.received ?? 0), 0);
    assert.ok(receivedSecond <= size - receivedFirst, `second run ${receivedSecond}, first ${receivedFirst}, file ${size}`);
    assert.ok(!s.log.slice(again).some((e) => e.method === 'POST'), 'no new upload was created');
    const served = curl([`${s.url}/images/r_1.ckm`]);
    assert.equal(served.status, 200);
    assert.equal(sha(served.body), sha(local));
    assert.deepEqual(readdirSync(join(root, '.uploads')), []);
    assert.deepEqual(readdirSync(state), [], 'the resume state goes once the file is published');
  });

  it('the same bytes again: fine; other bytes under a published name: refused (exit 3), the published file unchanged', async () => {
    let r = await upload([join(P, 'r_1.ckm')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).files[0].status, 'identical');
    const other = readFileSync(join(P2, 'r_1.ckm'));
    assert.equal(other.length, statSync(join(P, 'r_1.ckm')).size);
    assert.notEqual(sha(other), sha(readFileSync(join(P, 'r_1.ckm'))));
    r = await upload([join(P2, 'r_1.ckm')]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /refusing to overwrite r_1\.ckm/);
    assert.equal(JSON.parse(r.stdout).error.code, 'EEXIST');
    assert.equal(sha(curl([`${s.url}/images/r_1.ckm`]).body), sha(readFileSync(join(P, 'r_1.ckm'))));
    // and an index of another packing run does not match the published pack
    r = await upload([join(P2, 'r_1.ckm.index')]);
    assert.equal(r.code, 5, r.stderr);
    r = await upload([join(P, 'r_1.ckm.index')]);
    assert.equal(r.code, 0, r.stderr);
  });

  it('--max-upload-size bounds what an upload may declare; --max-uploads the upload requests in progress (503, Retry-After)', async () => {
    const small = await startServe(join(t.path, 'repo2'), ['--max-upload-size', '1M', '--max-uploads', '1']);
    try {
      const token = readFileSync(small.adminTokenFile, 'utf8').trim();
      const create = () => curl(['-X', 'POST', '-H', 'Tus-Resumable: 1.0.0', '-H', 'Upload-Length: 1000', '-H', `Upload-Metadata: filename ${Buffer.from('c_1.ckm').toString('base64')}`, '-H', `Authorization: Bearer ${token}`, `${small.url}/upload/`]);
      const c = create();
      assert.equal(c.status, 201);
      const location = header(c.headers, 'Location')!;
      assert.match(location, /^\/upload\/[0-9a-f]{32}$/);
      // a PATCH that sends 10 of its 1000 bytes and then holds the connection: one upload in progress
      const u = new URL(small.url);
      const sock = net.connect(Number(u.port), u.hostname);
      await new Promise<void>((res) => sock.once('connect', () => res()));
      sock.write(`PATCH ${location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\nAuthorization: Bearer ${token}\r\n\r\n${'x'.repeat(10)}`);
      const uploads = join(t.path, 'repo2', '.uploads');
      await waitInDir(uploads, () => statSync(join(uploads, location.slice('/upload/'.length))).size === 10);
      const busy = create();
      assert.equal(busy.status, 503);
      assert.equal(header(busy.headers, 'Retry-After'), '1');
      const closed = small.waitForLog((e) => e.method === 'PATCH');
      sock.destroy();
      await closed;
      assert.equal(create().status, 201);

      const r = await runMedvAsync(['image', 'upload', join(P, 'r_1.ckm'), '--server', small.url, '--token-file', small.adminTokenFile, '--state-dir', state]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /HTTP 413/);
      assert.deepEqual(readdirSync(join(t.path, 'repo2', 'images')), []);
    } finally {
      assert.equal(await small.stop('SIGINT'), 0, 'clean exit on SIGINT');
    }
  });
});
