/**
 * The uploader (tus-js-client on the one HTTP agent, src/client/tus-stack.ts) against real peers:
 * a connection to `medv serve` cut in the middle of a chunk, and a hostile server that names an
 * upload on another origin.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runMedv, tempDir } from '../helpers/cli.js';
import { cuttingProxy, listener } from '../helpers/net.js';
import { curl, runMedvAsync, startServe } from '../server/helpers.js';
import { uploadFiles } from '../../src/client/upload.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MiB = 1048576;

describe('client: medv image upload (tus-js-client on the HTTP agent)', function () {
  this.timeout(90_000);
  const t = tempDir('client-upload');
  after(() => t.cleanup());

  it('a connection cut in the middle of a chunk: the same run asks medv serve for its offset, sends the rest, and the published bytes are the file', async () => {
    const hostKey = join(t.path, 'host.key');
    writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
    const disk = join(t.path, 'c.raw');
    writeFileSync(disk, Buffer.concat([randomBytes(4 * MiB), Buffer.alloc(MiB)]));
    const out = join(t.path, 'packed');
    const p = runMedv(['image', 'pack', disk, '--name', 'c', '--version', '1', '--out', out, '--keys', join(t.path, 'keys'), '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
    assert.equal(p.code, 0, p.stderr);
    const local = readFileSync(join(out, 'c_1.ckm'));
    assert.ok(local.length > 2 * MiB, 'random data does not compress');

    const s = await startServe(join(t.path, 'repo'));
    // 1 MiB chunks; the cut falls 600 KiB into the first PATCH's body
    const proxy = await cuttingProxy(Number(new URL(s.url).port), 600 * 1024);
    try {
      const state = join(t.path, 'state');
      const [r] = await uploadFiles([join(out, 'c_1.ckm')], { server: proxy.url, token: readFileSync(s.adminTokenFile, 'utf8').trim(), stateDir: state, chunkSize: MiB });
      assert.ok(proxy.cut(), 'the connection was cut');
      assert.equal(r.status, 'published');
      assert.equal(sha(curl([`${s.url}/images/c_1.ckm`]).body), sha(local));
      // one upload, resumed after the cut from the offset the server had: what it kept of the cut
      // chunk was not sent again (the log is complete once the GET above is in it)
      await s.waitForLog((e) => e.method === 'GET' && e.path === '/images/c_1.ckm');
      const log = s.log.filter((e) => e.path.startsWith('/upload/'));
      assert.deepEqual(log.map((e) => e.method).slice(0, 3), ['POST', 'PATCH', 'HEAD']);
      assert.equal(log.filter((e) => e.method === 'POST').length, 1);
      const kept = local.length - log.reduce((n, e) => n + (e.received ?? 0), 0);
      assert.ok(kept > 0 && kept < 600 * 1024, `the server kept ${kept} bytes of the cut chunk`);
      assert.deepEqual(readdirSync(state), [], 'the resume state goes once the file is published');
    } finally {
      await proxy.close();
      assert.equal(await s.stop(), 0);
    }
  });

  it('a server naming an upload on another origin: refused before any connection there (exit 5), no state kept', async () => {
    const other = await listener('127.0.0.1');
    let location = '';
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests++;
      req.resume();
      req.on('end', () => { res.writeHead(req.method === 'POST' ? 201 : 500, { Location: location, 'Tus-Resumable': '1.0.0' }); res.end(); });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const file = join(t.path, 'q_1.ckm');
      writeFileSync(file, randomBytes(1000));
      const token = join(t.path, 'token');
      writeFileSync(token, 'x'.repeat(43), { mode: 0o600 });
      const state = join(t.path, 'state-x');
      // another port, and this very server under another name: both other origins
      for (const [i, loc] of [`http://127.0.0.1:${other.port}/upload/abc`, `//127.0.0.1:${other.port}/upload/abc`, `http://localhost:${port}/upload/abc`].entries()) {
        location = loc;
        const r = await runMedvAsync(['image', 'upload', file, '--server', `http://127.0.0.1:${port}`, '--token-file', token, '--state-dir', state]);
        assert.equal(r.code, 5, `${loc}: ${r.stderr}`);
        assert.match(r.stderr, /^medv: the server named an upload on another origin \(http:\/\/(127\.0\.0\.1|localhost):\d+, not http:\/\/127\.0\.0\.1:\d+\): nothing is sent there \(q_1\.ckm\) \[EBADREPLY\]\n$/);
        assert.equal(requests, i + 1, `${loc}: only the POST reached the server`);
        assert.deepEqual(readdirSync(state), [], `${loc}: no resume state names it`);
      }
      assert.equal(other.connections(), 0, 'no connection to the other origin');
    } finally {
      await other.close();
      await new Promise((r) => server.close(r));
    }
  });
});
