/**
 * A workspace from a server that speaks HTTPS with a private CA: `medv login --ca` pins it, and the
 * image fetch of `workspace start` uses the same CA (a client without it cannot log in at all).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { GUEST } from '../helpers/qemu.js';
import { run, runMedv, tempDir, type RunResult } from '../helpers/cli.js';
import { type ServeProcess, startServe } from '../server/helpers.js';

describe('workspaces over HTTPS with a pinned CA', function () {
  this.timeout(300_000);
  const dir = tempDir('ws-tls');
  const f = (...p: string[]) => join(dir.path, ...p);
  let srv: ServeProcess | undefined;
  const env = { MEDV_CLIENT_ROOT: f('client'), MEDV_RUN_DIR: f('run'), XDG_DATA_HOME: f('xdg'), XDG_CACHE_HOME: f('cache'), MEDV_STATE_DIR: f('state') };
  const ok = (r: RunResult) => { assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}${r.stdout}`); return r; };
  after(async () => {
    runMedv(['workspace', 'stop', 'tlsdesk', '--force'], env);
    await srv?.stop();
    await dir.cleanup();
  });

  it('login --ca, then workspace start deploys the image over https with the same CA', async () => {
    const ossl = (args: string[]) => run('openssl', args);
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=medv test CA']);
    ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('srv.key'), '-out', f('srv.csr'), '-subj', '/CN=medv test server']);
    fs.writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    ossl(['x509', '-req', '-in', f('srv.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('srv.pem'), '-days', '2', '-extfile', f('san.ext')]);
    fs.chmodSync(f('srv.key'), 0o600);
    fs.mkdirSync(f('root', 'images'), { recursive: true });
    srv = await startServe(f('root'), ['--tls-cert', f('srv.pem'), '--tls-key', f('srv.key')]);
    assert.match(srv.url, /^https:\/\/127\.0\.0\.1:/);
    const admin = ['--server', srv.url, '--token-file', srv.adminTokenFile, '--ca', f('ca.pem')];

    fs.copyFileSync(GUEST.image, f('img.raw'));
    ok(runMedv(['image', 'pack', f('img.raw'), '--name', 'tlsimg', '--version', '1', '--out', f('packed'), '--keys', f('keys')]));
    for (const n of ['tlsimg_1.ckm', 'tlsimg_1.ckm.index']) fs.copyFileSync(f('packed', n), f('root', 'images', n));
    fs.writeFileSync(f('pw'), 'tls-user-password', { mode: 0o600 });
    ok(runMedv(['admin', 'user', 'add', 'tina', '--password-file', f('pw'), ...admin]));
    fs.writeFileSync(f('policy.json'), JSON.stringify({ name: 'tls', users: ['tina'], workspaces: [{ name: 'tlsdesk', image: 'tlsimg', memory: 64, network: 'none' }] }));
    ok(runMedv(['admin', 'policy', 'publish', f('policy.json'), ...admin]));
    ok(runMedv(['admin', 'image-keys', 'publish', 'tlsimg', '--keys', f('keys'), ...admin]));

    const noCa = runMedv(['login', '--server', srv.url, '--user', 'tina', '--password-file', f('pw')], env);
    assert.equal(noCa.code, 10);
    assert.match(noCa.stderr, /not trusted: give its CA with --ca/);
    ok(runMedv(['login', '--server', srv.url, '--user', 'tina', '--password-file', f('pw'), '--ca', f('ca.pem')], env));
    const out = JSON.parse(ok(runMedv(['workspace', 'start', 'tlsdesk', '--accel', 'tcg', '--json'], env)).stdout);
    assert.equal(out.version, 1);
    assert.ok(out.deployed.fetchedBytes > 0);
    const got = await srv.waitForLog((e) => e.path === '/images/tlsimg_1.ckm' && e.method === 'GET', 10_000);
    assert.ok(got.status === 206 || got.status === 200, `the pack came over this https server (${got.status})`);
    ok(runMedv(['workspace', 'stop', 'tlsdesk', '--force'], env));
  });
});
