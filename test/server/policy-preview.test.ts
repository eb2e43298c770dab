/**
 * The preview of a policy change (policy-preview.ts) and the grant (keyservice.ts) decide who gets
 * what with the same rule: entitlement.ts in JavaScript, store.ts policiesFor in SQL. Here both are
 * run over one store with users, nested group memberships and overlapping policies: the JavaScript
 * rule entitles exactly the users the SQL one does, and previewing a policy's own current document
 * reaches nobody; previewing its removal takes exactly the workspaces it alone provides.
 */
import assert from 'node:assert/strict';
import { tempDir } from '../helpers/cli.js';
import { Store } from '../../src/server/store/index.js';
import { entitles, type PolicyDoc } from '../../src/server/entitlement.js';
import { previewPolicy } from '../../src/server/policy-preview.js';

describe('policy preview and grant agree on who is entitled', () => {
  const dir = tempDir('preview');
  let store: Store;
  const docs: Record<string, PolicyDoc & { name: string }> = {
    a: { name: 'a', users: ['u1', 'u9'], groups: ['g1'], workspaces: [{ name: 'desk', image: 'lab' }, { name: 'only-a', image: 'lab' }] },
    b: { name: 'b', groups: ['g2', 'g3'], workspaces: [{ name: 'desk', image: 'other' }] },
    c: { name: 'c', users: ['u4'], workspaces: [{ name: 'c-desk', image: 'lab' }] },
  };
  before(async () => {
    store = await Store.open(dir.path);
    const users: [string, string[]][] = [['u1', []], ['u2', ['g1']], ['u3', ['g2']], ['u4', ['g1', 'g3']], ['u5', []], ['u6', ['g3']]];
    for (const [u, g] of users) await store.addUser(u, 'x', g);
    for (const d of Object.values(docs)) await store.publishPolicy(d.name, JSON.stringify(d), { users: d.users ?? [], groups: d.groups ?? [] }, 'admin');
  });
  after(async () => {
    await store.close();
    await dir.cleanup();
  });

  it('the JavaScript rule entitles exactly whom the SQL rule does', async () => {
    for (const u of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6']) {
      const sql = (await store.policiesFor(u)).map((p) => p.name).sort();
      const groups = await store.groupsOf(u);
      const js = Object.values(docs).filter((d) => entitles(d, u, groups)).map((d) => d.name).sort();
      assert.deepEqual(js, sql, u);
    }
  });

  it('republishing a policy unchanged reaches nobody; removing it takes what it alone provides', async () => {
    const same = await previewPolicy(store, 'a', docs.a);
    assert.deepEqual([same.users.gained, same.users.lost, same.workspaces.gained, same.workspaces.lost, same.workspaces.changed], [[], [], [], [], []]);
    assert.equal(same.users.kept, 3, 'u1, u2 (g1) and u4 (g1)');
    const gone = await previewPolicy(store, 'a', null);
    assert.deepEqual(gone.users.lost, ['u1', 'u2', 'u4']);
    const lost = gone.workspaces.lost.map((x) => `${x.user}:${x.workspace}`).sort();
    assert.deepEqual(lost, ['u1:desk', 'u1:only-a', 'u2:desk', 'u2:only-a', 'u4:only-a'], 'u4 keeps desk through b (g3)');
    assert.deepEqual(gone.workspaces.changed.map((x) => [x.user, x.workspace, x.before.image, x.after.image]), [['u4', 'desk', 'lab', 'other']], 'desk came from a before b (by name); now from b');
  });
});
