/**
 * `medv admin` for what the console does, through the real CLI against a real `medv serve`:
 * user role and groups, policy diff/preview/unpublish, image list and prune on the server, client
 * lock/unlock/orders, clients --history and --csv, audit --until and --csv; every command with
 * --json and its exit status for a bad argument and for something that does not exist.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runMedvAsync } from '../server/helpers.js';
import { tempDir } from '../helpers/cli.js';
import { type World, makeWorld, packLab, parseCsv, policyDoc } from '../server/console/fixture.js';

describe('cli: medv admin for the console\'s actions', function () {
  this.timeout(180_000);
  const work = tempDir('cli-admin-console');
  let w: World;
  const medv = async (args: string[]) => runMedvAsync([...args, '--server', w.srv.url, '--token-file', w.srv.adminTokenFile]);
  const json = async (args: string[]) => {
    const r = await medv([...args, '--json']);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };

  before(async () => { w = await makeWorld('sqlite', packLab(work.path), 'cli'); });
  after(async () => { await w?.cleanup(); await work.cleanup(); });

  it('user role and groups', async () => {
    assert.equal((await json(['admin', 'user', 'role', 'bob', 'admin'])).role, 'admin');
    assert.deepEqual((await json(['admin', 'user', 'groups', 'bob', 'ops', 'finance'])).groups, ['finance', 'ops']);
    const bad = await medv(['admin', 'user', 'role', 'bob', 'king']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^medv: role must be admin or user/);
    assert.equal((await medv(['admin', 'user', 'role', 'nobody', 'user'])).code, 3);
  });

  it('policy diff, preview and unpublish (--dry-run first)', async () => {
    const diff = await medv(['admin', 'policy', 'diff', 'finance']);
    assert.equal(diff.code, 0, diff.stderr);
    assert.match(diff.stdout, /^added\s+\/groups: "lab-team"$/m);
    assert.match(diff.stdout, /^changed\s+\/workspaces\[desk\]\/memory: 512 -> 1024$/m);
    const file = join(work.path, 'finance.json');
    writeFileSync(file, JSON.stringify(policyDoc('finance', [], ['finance'], 1024)));
    const preview = await json(['admin', 'policy', 'preview', file]);
    assert.deepEqual([preview.users.lost.sort(), preview.next], [['carol@example.org'], 3]);
    const dry = await medv(['admin', 'policy', 'unpublish', 'finance', '--dry-run']);
    assert.match(dry.stdout, /users losing it: {2}alice, bob, carol@example.org/);
    assert.match(dry.stdout, /client alice-laptop \(alice\) loses desk at its next contact/);
    assert.equal((await json(['admin', 'policy', 'unpublish', 'finance'])).version, 3);
    assert.equal((await medv(['admin', 'policy', 'unpublish', 'finance'])).code, 3, 'already unpublished');
    assert.equal((await medv(['admin', 'policy', 'diff', 'nope'])).code, 3);
  });

  it('image list, per image with the update size, and prune on the server (--dry-run)', async () => {
    const all = await json(['admin', 'image', 'list']);
    assert.deepEqual(all.images.map((i: { name: string; versions: number }) => [i.name, i.versions]), [['lab', 2]]);
    const one = await medv(['admin', 'image', 'list', 'lab']);
    assert.match(one.stdout, /^2\s+\S+ \S+\s+\S+ \S+\s+\d+ \(\d+\)\s+\S+ \S+ from v1\s+trusted\s+0$/m);
    const dry = await json(['admin', 'image', 'prune', 'lab', '--keep', '1', '--dry-run']);
    assert.deepEqual([dry.keptVersions, dry.deleted, dry.clientsOnRemoved], [[2], ['lab_1.ckm.index'], 1]);
    assert.equal((await medv(['admin', 'image', 'list', 'nope'])).code, 3);
  });

  it('client lock, orders and unlock; clients --history and --csv; audit --until and --csv', async () => {
    const lock = await json(['admin', 'client', 'lock', w.alice.client, '--reason', 'stolen']);
    assert.deepEqual([lock.action, lock.scope, lock.subject, lock.reason], ['lock', 'client', w.alice.client, 'stolen']);
    const orders = await medv(['admin', 'client', 'orders']);
    assert.match(orders.stdout, new RegExp(`^lock\\s+client ${w.alice.client}\\s+\\*`, 'm'));
    assert.equal((await medv(['admin', 'client', 'lock', '--reason', 'x'])).code, 2, 'a client or --user');
    assert.equal((await json(['admin', 'client', 'unlock', w.alice.client])).cleared, 1);
    const history = await json(['admin', 'clients', '--history', '--client', w.alice.client]);
    assert.deepEqual(history.reports.map((r: { state: string }) => r.state), ['running', 'failed']);
    const csv = parseCsv((await medv(['admin', 'clients', '--state', 'running', '--csv'])).stdout);
    assert.deepEqual(csv.slice(1).map((r) => r.slice(0, 3)), [[w.alice.client, 'alice', 'desk']]);
    const audit = parseCsv((await medv(['admin', 'audit', '--action', 'client.*', '--csv'])).stdout);
    assert.deepEqual(audit.slice(1).map((r) => r[4]), ['client.unlock', 'client.lock']);
    const none = await json(['admin', 'audit', '--until', '2000-01-01']);
    assert.deepEqual(none.entries, []);
    assert.equal((await medv(['admin', 'audit', '--until', 'yesterday'])).code, 2);
  });
});
