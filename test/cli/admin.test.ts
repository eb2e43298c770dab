/**
 * `medv admin` and `medv login` as users run them, against a real `medv serve` (SQLite): exit
 * statuses, one-line errors, JSON, the token file (0600, usable), no password on any output, and
 * the terminal prompt without echo (through a real pseudo-terminal made by script(1)).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { MEDV_BIN, run, runMedv, tempDir } from '../helpers/cli.js';
import { type ServeProcess, startServe } from '../server/helpers.js';
import { api, password, unique } from '../server/accounts-helpers.js';
import { randomBytes } from 'node:crypto';
import { openImageKeys } from '../../src/pack/index.js';
import { generateClientKeyPair, openReleasedKeys } from '../../src/api/keyrelease.js';
import { requestGrant, sendReports } from '../../src/client/api.js';

describe('cli: medv admin and medv login', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let srv: ServeProcess;
  let tokenFile: string;
  const medv = (args: string[], env: Record<string, string> = {}) => runMedv(args, { XDG_CONFIG_HOME: join(dir.path, 'config'), MEDV_CLIENT_ROOT: join(dir.path, 'client'), MEDV_ADMIN_TOKEN: undefined, ...env });
  const pwFile = (pw: string) => {
    const f = join(dir.path, `pw-${unique('f')}`);
    writeFileSync(f, `${pw}\n`, { mode: 0o600 });
    return f;
  };

  before(async () => {
    dir = tempDir('admin-cli');
    srv = await startServe(join(dir.path, 'root'));
    tokenFile = srv.adminTokenFile;
  });
  after(async () => {
    await srv?.stop();
    await dir?.cleanup();
  });

  it('admin user add and list; a second add of the name, a wrong token and no token are one-line errors', async () => {
    const user = unique('alice');
    const pw = password();
    const r = medv(['admin', 'user', 'add', user, '--password-file', pwFile(pw), '--group', 'fin', '--group', 'lab', '--server', srv.url, '--token-file', tokenFile, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).groups, ['fin', 'lab']);
    assert.ok(!r.stdout.includes(pw) && !r.stderr.includes(pw));
    const list = medv(['admin', 'user', 'list', '--server', srv.url, '--token-file', tokenFile, '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout).users.find((u: { user: string }) => u.user === user).groups, ['fin', 'lab']);
    const plain = medv(['admin', 'user', 'list', '--server', srv.url], { MEDV_ADMIN_TOKEN: readFileSync(tokenFile, 'utf8').trim() });
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, new RegExp(`^${user}\tfin,lab\t`, 'm'));

    const again = medv(['admin', 'user', 'add', user, '--password-file', pwFile(password()), '--server', srv.url, '--token-file', tokenFile]);
    assert.equal(again.code, 3);
    assert.match(again.stderr, /already exists \[EEXIST\]\n$/);
    assert.equal(again.stderr.split('\n').length, 2, 'one line');
    const wrong = join(dir.path, 'wrong.token');
    writeFileSync(wrong, 'not-the-admin-token-at-all\n', { mode: 0o600 });
    const denied = medv(['admin', 'user', 'list', '--server', srv.url, '--token-file', wrong]);
    assert.equal(denied.code, 4);
    assert.match(denied.stderr, /the admin token, or the login of an administrator, is required .*\[EDENIED\]\n$/);
    const none = medv(['admin', 'user', 'list', '--server', srv.url]);
    assert.equal(none.code, 4);
    assert.match(none.stderr, /no admin token/);
    const short = medv(['admin', 'user', 'add', unique('bob'), '--password-file', pwFile('short'), '--server', srv.url, '--token-file', tokenFile]);
    assert.equal(short.code, 2);
    assert.match(short.stderr, /password must be 8 to 1024 bytes/);
  });

  it('admin policy publish: versions, and a bad document refused with the path of the bad field', () => {
    const name = unique('fin');
    const good = join(dir.path, 'good.json');
    writeFileSync(good, JSON.stringify({ name, groups: ['fin'], workspaces: [{ name: 'desk', image: 'lab', memory: 2048, network: 'none' }] }));
    const one = medv(['admin', 'policy', 'publish', good, '--server', srv.url, '--token-file', tokenFile]);
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, `policy ${name} version 1 published\n`);
    const two = medv(['admin', 'policy', 'publish', good, '--server', srv.url, '--token-file', tokenFile, '--json']);
    assert.deepEqual(JSON.parse(two.stdout), { name, version: 2 });

    const bad = join(dir.path, 'bad.json');
    writeFileSync(bad, JSON.stringify({ name, workspaces: [{ name: 'desk', image: 'lab', memory: 'plenty' }] }));
    const refused = medv(['admin', 'policy', 'publish', bad, '--server', srv.url, '--token-file', tokenFile]);
    assert.equal(refused.code, 5);
    assert.match(refused.stderr, /^medv: policy field \/workspaces\/0\/memory does not match any allowed form \[EPOLICY\]\n$/);
    const refusedJson = medv(['admin', 'policy', 'publish', bad, '--server', srv.url, '--token-file', tokenFile, '--json']);
    assert.equal(JSON.parse(refusedJson.stdout).error.data.path, '/workspaces/0/memory');
    const notJson = join(dir.path, 'not.json');
    writeFileSync(notJson, '{ name: ');
    const nj = medv(['admin', 'policy', 'publish', notJson, '--server', srv.url, '--token-file', tokenFile]);
    assert.equal(nj.code, 5);
    assert.match(nj.stderr, /not JSON/);
    const list = medv(['admin', 'policy', 'list', '--server', srv.url, '--token-file', tokenFile, '--json']);
    assert.deepEqual(JSON.parse(list.stdout).policies.filter((p: { name: string }) => p.name === name).map((p: { version: number }) => p.version), [1, 2]);
  });

  it('login keeps the token sealed in the client data repository (0600, no token in the clear) and never prints the password or the token', async () => {
    const user = unique('carol');
    const pw = password();
    assert.equal(medv(['admin', 'user', 'add', user, '--password-file', pwFile(pw), '--server', srv.url, '--token-file', tokenFile]).code, 0);
    const clientRoot = join(dir.path, 'client');
    const r = medv(['login', '--server', srv.url, '--user', user, '--password-file', pwFile(pw), '--client-root', clientRoot, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.credentials, join(clientRoot, 'data', 'Users', user, 'Credentials.dat'));
    assert.equal(out.tokenFile, undefined);
    assert.equal(statSync(out.credentials).mode & 0o777, 0o600);
    const sealed = readFileSync(out.credentials);
    assert.ok(!sealed.includes(Buffer.from(user)) && !sealed.includes(Buffer.from('token')), 'the sealed login holds no plaintext');
    const cfg = JSON.parse(readFileSync(join(clientRoot, 'data', 'Local', 'Config', 'Client.json'), 'utf8'));
    assert.equal(cfg.user, user);
    assert.equal(cfg.server, srv.url.replace(/\/$/, ''));
    for (const s of [r.stdout, r.stderr]) assert.ok(!s.includes(pw));

    const outFile = join(dir.path, 'tok.json');
    const r2 = medv(['login', '--server', srv.url, '--user', user, '--password-file', pwFile(pw), '--client-root', clientRoot, '--token-out', outFile, '--lifetime', '1h']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stdout, /^logged in to http:\/\/127\.0\.0\.1:\d+ as carol-[0-9a-f]+ until \S+; login sealed in .*Credentials\.dat; token in .*tok\.json\n$/);
    const t2 = JSON.parse(readFileSync(outFile, 'utf8'));
    for (const s of [r2.stdout, r2.stderr]) assert.ok(!s.includes(t2.token));
    assert.ok(!readFileSync(out.credentials).includes(Buffer.from(t2.token)));
    const me = await api(srv.url, 'GET', '/api/whoami', { token: t2.token });
    assert.equal(me.status, 200);
    assert.equal(me.body.user, user);
    assert.equal(statSync(outFile).mode & 0o777, 0o600);
    const left = Date.parse(t2.expires) - Date.now();
    assert.ok(left > 3500_000 && left <= 3600_000, `${left} ms left`);

    const wrong = medv(['login', '--server', srv.url, '--user', user, '--password-file', pwFile('wrong-password')]);
    assert.equal(wrong.code, 4);
    assert.equal(wrong.stderr, 'medv: wrong user name or password [EDENIED]\n');
    const noInput = medv(['login', '--server', srv.url, '--user', user]);
    assert.equal(noInput.code, 4);
    assert.match(noInput.stderr, /^medv: no password: give --password-file FILE .*\[ENOKEY\]\n$/);
  });

  it('login asks on the terminal without echoing the password', async function () {
    if (spawnSync('script', ['--version']).status !== 0) this.skip();
    const user = unique('dan');
    const pw = password();
    assert.equal(medv(['admin', 'user', 'add', user, '--password-file', pwFile(pw), '--server', srv.url, '--token-file', tokenFile]).code, 0);
    const outFile = join(dir.path, 'tty.json');
    // the same account as the other tests' medv (its XDG_CONFIG_HOME holds the host key's wrap key)
    const cmd = ['env', `XDG_CONFIG_HOME=${join(dir.path, 'config')}`, process.execPath, MEDV_BIN, 'login', '--server', srv.url, '--user', user, '--client-root', join(dir.path, 'client'), '--token-out', outFile].map((a) => `'${a}'`).join(' ');
    const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let seen = '';
    const prompted = new Promise<void>((res) => child.stdout.on('data', (d) => { seen += d; if (seen.includes('Password for')) res(); }));
    const closed = new Promise<number | null>((res) => child.once('close', res));
    await prompted;
    child.stdin.write(`${pw}\r`);
    const code = await closed;
    assert.equal(code, 0, seen);
    assert.match(seen, /logged in to/);
    assert.ok(!seen.includes(pw), `the terminal showed the password: ${JSON.stringify(seen)}`);
    assert.equal(JSON.parse(readFileSync(outFile, 'utf8')).user, user);
  });

  it('admin image-keys publish: the console keys reach an entitled client; missing keys and a wrong KEK are one-line errors', async () => {
    const keyDir = join(dir.path, 'console-keys');
    const hostKey = join(dir.path, 'console.hostkey');
    writeFileSync(hostKey, randomBytes(32), { mode: 0o600 });
    const kek = () => ({ kind: 'hostkey' as const, keyFile: hostKey });
    const made = await openImageKeys(keyDir, 'desk', kek, { create: true, sign: true });
    const contentKey = Buffer.from(made.dataKeys.content.key);
    made.dispose();
    const base = ['--keys', keyDir, '--server', srv.url, '--token-file', tokenFile];
    const r = medv(['admin', 'image-keys', 'publish', 'desk', ...base, '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^keys of image desk \(id [0-9a-f]{32}, 1 signer\) published\n$/);
    assert.ok(!r.stdout.includes(contentKey.toString('base64')) && !r.stdout.includes(contentKey.toString('hex')));

    const user = unique('erin');
    const pw = password();
    assert.equal(medv(['admin', 'user', 'add', user, '--password-file', pwFile(pw), '--server', srv.url, '--token-file', tokenFile]).code, 0);
    const doc = join(dir.path, 'desk.json');
    writeFileSync(doc, JSON.stringify({ name: unique('desk'), users: [user], workspaces: [{ name: 'desk', image: 'desk' }] }));
    assert.equal(medv(['admin', 'policy', 'publish', doc, '--server', srv.url, '--token-file', tokenFile]).code, 0);
    const token = (await api(srv.url, 'POST', '/api/login', { body: { user, password: pw } })).body.token;
    const pair = generateClientKeyPair();
    try {
      const g = await requestGrant(srv.url, token, { workspace: 'desk', client: 'host-1', clientKey: pair.publicKey });
      const k = openReleasedKeys(g.sealed, pair);
      assert.ok(Buffer.from(k.content.key).equals(contentKey));
      k.dispose();
    } finally {
      pair.dispose();
    }

    const none = medv(['admin', 'image-keys', 'publish', 'nothing', ...base, '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
    assert.equal(none.code, 4);
    assert.match(none.stderr, /^medv: no content key for image nothing .*\[ENOKEY\]\n$/);
    const otherKey = join(dir.path, 'other.hostkey');
    writeFileSync(otherKey, randomBytes(32), { mode: 0o600 });
    const wrong = medv(['admin', 'image-keys', 'publish', 'desk', ...base, '--host-key', otherKey], { MEDV_PASSPHRASE: '' });
    assert.equal(wrong.code, 4);
    assert.equal(wrong.stderr.split('\n').length, 2, wrong.stderr);
    assert.match(wrong.stderr, /\[EBADKEY\]\n$/);
    const noToken = medv(['admin', 'image-keys', 'publish', 'desk', '--keys', keyDir, '--server', srv.url, '--host-key', hostKey]);
    assert.equal(noToken.code, 4);
    assert.match(noToken.stderr, /no admin token/);
    const down = medv(['admin', 'image-keys', 'publish', 'desk', '--keys', keyDir, '--server', 'http://127.0.0.1:1', '--token-file', tokenFile, '--host-key', hostKey], { MEDV_PASSPHRASE: '' });
    assert.equal(down.code, 10);
    assert.equal(down.stderr, 'medv: http://127.0.0.1:1: ECONNREFUSED (the server cannot be reached) [ENETWORK]\n');
  });

  it('admin clients: a table of what clients last reported, or JSON', async () => {
    const user = unique('finn');
    const pw = password();
    assert.equal(medv(['admin', 'user', 'add', user, '--password-file', pwFile(pw), '--server', srv.url, '--token-file', tokenFile]).code, 0);
    const token = (await api(srv.url, 'POST', '/api/login', { body: { user, password: pw } })).body.token;
    const client = unique('laptop');
    // the client reports only once the user is entitled and was granted keys on it
    const policy = join(dir.path, `${unique('p')}.json`);
    writeFileSync(policy, JSON.stringify({ name: unique('p'), users: [user], workspaces: [{ name: 'desk', image: 'noimg' }, { name: 'lab', image: 'noimg' }] }));
    assert.equal(medv(['admin', 'policy', 'publish', policy, '--server', srv.url, '--token-file', tokenFile]).code, 0);
    const pair = generateClientKeyPair();
    await assert.rejects(requestGrant(srv.url, token, { workspace: 'desk', client, clientKey: pair.publicKey }), /no keys published/);
    pair.dispose();
    const at = new Date(Date.now() - 5 * 60_000).toISOString();
    assert.equal(await sendReports(srv.url, token, client, [
      { workspace: 'desk', version: 2, state: 'failed', lastError: 'QEMU exited:\nno KVM', at },
      { workspace: 'lab', version: null, state: 'offline', at },
    ]), 2);
    const table = medv(['admin', 'clients', '--server', srv.url, '--token-file', tokenFile]);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.split('\n');
    assert.match(lines[0], /^CLIENT +USER +WORKSPACE +VERSION +STATE +AGE +LAST ERROR$/);
    assert.ok(lines.some((l) => new RegExp(`^${client} +${user} +desk +2 +failed +5m +QEMU exited: no KVM$`).test(l)), table.stdout);
    assert.ok(lines.some((l) => new RegExp(`^${client} +${user} +lab +- +offline +5m$`).test(l)), table.stdout);
    const json = medv(['admin', 'clients', '--server', srv.url, '--token-file', tokenFile, '--json']);
    assert.equal(json.code, 0, json.stderr);
    const mine = JSON.parse(json.stdout).clients.filter((c: { client: string }) => c.client === client);
    assert.deepEqual(mine.map((c: { workspace: string; version: number | null; state: string; at: string; lastError?: string }) => [c.workspace, c.version, c.state, c.at, c.lastError]), [
      ['desk', 2, 'failed', at, 'QEMU exited:\nno KVM'],
      ['lab', null, 'offline', at, undefined],
    ]);
  });

  it('admin user disable, enable, passwd, revoke and delete: JSON, one-line errors, exit statuses; --admin makes an administrator', async () => {
    const base = ['--server', srv.url, '--token-file', tokenFile];
    const user = unique('gus');
    const pw = password();
    assert.equal(medv(['admin', 'user', 'add', user, '--password-file', pwFile(pw), '--group', 'ops', ...base]).code, 0);
    const boss = unique('boss');
    const bossPw = password();
    const made = medv(['admin', 'user', 'add', boss, '--admin', '--password-file', pwFile(bossPw), ...base]);
    assert.equal(made.code, 0, made.stderr);
    assert.equal(made.stdout, `administrator ${boss} created\n`);
    const listed = JSON.parse(medv(['admin', 'user', 'list', ...base, '--json']).stdout).users as { user: string; role: string }[];
    assert.equal(listed.find((u) => u.user === boss)!.role, 'admin');
    assert.equal(listed.find((u) => u.user === user)!.role, 'user');
    const token = (await api(srv.url, 'POST', '/api/login', { body: { user, password: pw } })).body.token;

    const dis = medv(['admin', 'user', 'disable', user, ...base, '--json']);
    assert.equal(dis.code, 0, dis.stderr);
    assert.equal(JSON.parse(dis.stdout).disabled, true);
    assert.equal((await api(srv.url, 'GET', '/api/whoami', { token })).status, 403, 'its token stops working at once (403: the account is disabled)');
    const en = medv(['admin', 'user', 'enable', user, ...base]);
    assert.equal(en.stdout, `user ${user} enabled\n`);
    const rv = medv(['admin', 'user', 'revoke', user, ...base]);
    assert.equal(rv.code, 0, rv.stderr);
    assert.equal(rv.stdout, `1 token of ${user} revoked\n`);
    const pw2 = password();
    const pwd = medv(['admin', 'user', 'passwd', user, '--password-file', pwFile(pw2), ...base, '--json']);
    assert.equal(pwd.code, 0, pwd.stderr);
    assert.deepEqual(JSON.parse(pwd.stdout), { user, tokensRevoked: 0 });
    assert.ok(!pwd.stdout.includes(pw2) && !pwd.stderr.includes(pw2));
    assert.equal((await api(srv.url, 'POST', '/api/login', { body: { user, password: pw } })).status, 401, 'the old password no longer works');
    assert.equal((await api(srv.url, 'POST', '/api/login', { body: { user, password: pw2 } })).status, 200);
    const del = medv(['admin', 'user', 'delete', user, ...base]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(del.stdout, `user ${user} deleted (1 group membership, 2 tokens, 0 clients, 0 reports)\n`);

    for (const verb of ['disable', 'enable', 'revoke', 'delete']) {
      const r = medv(['admin', 'user', verb, user, ...base]);
      assert.equal(r.code, 3, `${verb}: ${r.stderr}`);
      assert.equal(r.stderr, `medv: no user ${user} [ENOENT]\n`);
    }
    const bad = medv(['admin', 'user', 'disable', 'no/such', ...base]);
    assert.equal(bad.code, 2);
    // an administrator's own login (a token file written by medv login --token-out) works as the admin token does
    const bossLogin = join(dir.path, 'boss-token.json');
    assert.equal(medv(['login', '--server', srv.url, '--user', boss, '--password-file', pwFile(bossPw), '--client-root', join(dir.path, 'boss-client'), '--token-out', bossLogin]).code, 0);
    const bossToken = JSON.parse(readFileSync(bossLogin, 'utf8')).token as string;
    const asBoss = medv(['admin', 'user', 'list', '--server', srv.url, '--json'], { MEDV_ADMIN_TOKEN: bossToken });
    assert.equal(asBoss.code, 0, asBoss.stderr);
    const userPw = password();
    const plainUser = unique('pl');
    assert.equal(medv(['admin', 'user', 'add', plainUser, '--password-file', pwFile(userPw), ...base]).code, 0);
    const userToken = (await api(srv.url, 'POST', '/api/login', { body: { user: plainUser, password: userPw } })).body.token;
    const refused = medv(['admin', 'user', 'list', '--server', srv.url], { MEDV_ADMIN_TOKEN: userToken });
    assert.equal(refused.code, 4);
    assert.equal(refused.stderr, `medv: user ${plainUser} is not an administrator [EFORBIDDEN]\n`);
  });

  it('--help teaches with examples', () => {
    for (const args of [['admin', 'user', 'delete'], ['admin', 'user', 'disable'], ['admin', 'user', 'passwd'], ['admin', 'user', 'revoke'], ['admin', 'audit']]) {
      const r = medv([...args, '--help']);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /\nExit status:\n {2}0 +success\n[^]* {2}4 +wrong admin token \(EDENIED\)/);
      if (args[1] === 'user') assert.match(r.stdout, /^ {2}3 +no such user \(ENOENT\)$/m);
    }
    assert.match(medv(['admin', 'user', 'delete', '--help']).stdout, /group memberships.*tokens.*clients.*reports/s);
    for (const args of [['admin', 'policy', 'publish'], ['login'], ['admin', 'image-keys', 'publish'], ['admin', 'clients']]) {
      const r = medv([...args, '--help']);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /Examples:\n {2}medv /);
    }
  });
});

describe('cli: medv serve over HTTPS, medv login and admin with a pinned CA', function () {
  this.timeout(60_000);
  let dir: ReturnType<typeof tempDir>;
  let srv: ServeProcess | undefined;
  before(() => { dir = tempDir('tls'); });
  after(async () => { await srv?.stop(); await dir.cleanup(); });

  it('credentials are accepted over TLS from another address; without the CA the client refuses the server', async function () {
    const ext = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
    if (!ext) this.skip();
    const f = (n: string) => join(dir.path, n);
    const ossl = (args: string[]) => run('openssl', args);
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=medv test CA']);
    ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('srv.key'), '-out', f('srv.csr'), '-subj', '/CN=medv test server']);
    writeFileSync(f('san.ext'), `subjectAltName=IP:127.0.0.1,IP:${ext!.address}\n`);
    ossl(['x509', '-req', '-in', f('srv.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('srv.pem'), '-days', '2', '-extfile', f('san.ext')]);
    chmodSync(f('srv.key'), 0o644);
    const open = runMedv(['serve', '--root', f('root'), '--port', '0', '--tls-cert', f('srv.pem'), '--tls-key', f('srv.key')]);
    assert.equal(open.code, 4, 'a TLS key readable by others is refused');
    assert.match(open.stderr, /too open.*\[EINSECURE\]\n$/);
    chmodSync(f('srv.key'), 0o600);

    srv = await startServe(f('root'), ['--host', '0.0.0.0', '--tls-cert', f('srv.pem'), '--tls-key', f('srv.key')]);
    const server = `https://${ext!.address}:${new URL(srv.url).port}`;
    assert.match(srv.url, /^https:/);
    const user = unique('tess');
    const pw = password();
    const pwf = f('pw');
    writeFileSync(pwf, pw, { mode: 0o600 });
    const add = runMedv(['admin', 'user', 'add', user, '--password-file', pwf, '--server', server, '--ca', f('ca.pem'), '--token-file', srv.adminTokenFile]);
    assert.equal(add.code, 0, add.stderr);
    const env = { XDG_CONFIG_HOME: f('config'), MEDV_CLIENT_ROOT: f('client') };
    const ok = runMedv(['login', '--server', server, '--user', user, '--password-file', pwf, '--ca', f('ca.pem'), '--json'], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).user, user);
    const untrusted = runMedv(['login', '--server', server, '--user', user, '--password-file', pwf], env);
    assert.equal(untrusted.code, 10);
    assert.match(untrusted.stderr, /not trusted: give its CA with --ca/);
    // a peer: curl over TLS from the outside address gets the API's answer, not the plain-HTTP refusal
    const c = spawnSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', f('ca.pem'), '-H', 'Content-Type: application/json', '-d', JSON.stringify({ user, password: 'wrong-password' }), `${server}/api/login`], { encoding: 'utf8' });
    assert.equal(c.stdout, '401');
  });
});
