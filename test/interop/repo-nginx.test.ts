/**
 * `medv serve` against nginx, the peer DESIGN names for branch offices: both serve the same
 * DIR/images; for the same requests (whole, single, suffix, several and unsatisfiable ranges)
 * curl must read the same status and the same parts with the same bytes from each.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/cli.js';
import { curl, header, startServe, waitInDir, type CurlResult, type ServeProcess } from '../server/helpers.js';

/** Status, and each part (Content-Range, bytes) of a 206; the body of a 200. */
function parts(r: CurlResult): { status: number; parts: { range: string; data: string }[] } {
  const ct = header(r.headers, 'Content-Type') ?? '';
  const m = /boundary=([^;\s]+)/.exec(ct);
  if (r.status === 206 && m) {
    const sep = Buffer.from(`--${m[1]}`);
    const out: { range: string; data: string }[] = [];
    let at = r.body.indexOf(sep);
    while (at >= 0 && r.body.subarray(at + sep.length, at + sep.length + 2).toString() !== '--') {
      const headEnd = r.body.indexOf('\r\n\r\n', at);
      const next = r.body.indexOf(sep, headEnd);
      out.push({ range: /Content-Range:\s*(.*?)\r?$/im.exec(r.body.subarray(at, headEnd).toString('latin1'))![1], data: r.body.subarray(headEnd + 4, next - 2).toString('hex') });
      at = next;
    }
    return { status: r.status, parts: out };
  }
  return { status: r.status, parts: [{ range: header(r.headers, 'Content-Range') ?? '', data: r.status >= 400 ? '' : r.body.toString('hex') }] };
}

describe('interop: medv serve and nginx serve a repository the same way', function () {
  this.timeout(60_000);
  const t = tempDir('repo-nginx');
  const root = join(t.path, 'repo');
  const sock = join(t.path, 'nginx.sock');
  const content = randomBytes(200_000);
  let nginx: ChildProcess | undefined;
  let s: ServeProcess;

  before(async function () {
    if (!existsSync('/usr/sbin/nginx')) this.skip();
    mkdirSync(join(root, 'images'), { recursive: true });
    writeFileSync(join(root, 'images', 'lab_1.ckm'), content);
    const conf = join(t.path, 'nginx.conf');
    writeFileSync(conf, `daemon off; master_process off; pid ${t.path}/nginx.pid; error_log ${t.path}/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${t.path}/cb; proxy_temp_path ${t.path}/px; fastcgi_temp_path ${t.path}/fc; uwsgi_temp_path ${t.path}/uw; scgi_temp_path ${t.path}/sc;
  types { } default_type application/octet-stream;
  server { listen unix:${sock}; location /images/ { root ${root}; } }
}
`);
    nginx = spawn('/usr/sbin/nginx', ['-p', t.path, '-c', conf], { stdio: 'ignore' });
    await waitInDir(t.path, () => existsSync(sock));
    s = await startServe(root);
  });
  after(async () => {
    if (s) await s.stop();
    if (nginx && nginx.exitCode === null) {
      const gone = new Promise((res) => nginx!.once('exit', res));
      nginx.kill('SIGQUIT');
      await gone;
    }
    await t.cleanup();
  });

  for (const range of [undefined, '0-99', '199990-', '-17', '0-9,1000-1999,150000-150010', '5-5,7-7', '300000-']) {
    it(`Range ${range ?? '(none)'}: same status, parts and bytes`, () => {
      const args = range ? ['-r', range] : [];
      const ours = parts(curl([...args, `${s.url}/images/lab_1.ckm`]));
      const theirs = parts(curl([...args, '--unix-socket', sock, 'http://localhost/images/lab_1.ckm']));
      assert.deepEqual(ours, theirs);
      if (range && range.includes(',')) assert.equal(ours.status, 206);
    });
  }

  it('a stale If-Range: both answer 200 with the whole file', () => {
    const ours = curl(['-r', '0-9', '-H', 'If-Range: "stale"', `${s.url}/images/lab_1.ckm`]);
    const theirs = curl(['-r', '0-9', '-H', 'If-Range: "stale"', '--unix-socket', sock, 'http://localhost/images/lab_1.ckm']);
    assert.equal(ours.status, 200);
    assert.equal(theirs.status, 200);
    assert.ok(ours.body.equals(theirs.body));
    assert.ok(ours.body.equals(content));
  });
});
