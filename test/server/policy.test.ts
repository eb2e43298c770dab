/** The policy schema as documented: docs/policy.schema.json is the schema the server uses, and docs/policy.md's example passes it. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { POLICY_SCHEMA } from '../../src/api/policy-schema.js';
import { checkPolicy } from '../../src/api/policy.js';
import { REPO_ROOT } from '../helpers/cli.js';

describe('server: policy schema and its documentation', () => {
  it('docs/policy.schema.json is the schema the server validates with', () => {
    assert.deepEqual(JSON.parse(readFileSync(join(REPO_ROOT, 'docs/policy.schema.json'), 'utf8')), JSON.parse(JSON.stringify(POLICY_SCHEMA)));
  });

  it('the example in docs/policy.md is a valid policy, and each field it shows is checked', () => {
    const md = readFileSync(join(REPO_ROOT, 'docs/policy.md'), 'utf8');
    const example = JSON.parse(/```json\n([\s\S]*?)\n```/.exec(md)![1]);
    assert.equal(checkPolicy(structuredClone(example)).name, 'finance');
    for (const field of Object.keys(example.workspaces[0])) {
      const bad = structuredClone(example);
      bad.workspaces[0][field] = { not: 'valid' };
      assert.throws(() => checkPolicy(bad), (e: { code: string; data: { path: string } }) => e.code === 'EPOLICY' && e.data.path.startsWith(`/workspaces/0/${field}`), field);
    }
  });

  it('published applications: names by the name rules, argv a list of strings (never a shell string), no NUL, no empty program, no repeated name', () => {
    const doc = (applications: unknown) => ({ name: 'p', workspaces: [{ name: 'w', image: 'lab', applications }] });
    assert.doesNotThrow(() => checkPolicy(doc([{ name: 'editor', title: 'Editor "2010" %u', argv: ['sh', '-c', 'exit 7', ''] }])));
    const cases: [unknown, string][] = [
      [[{ name: 'editor', command: 'notepad.exe' }], '/workspaces/0/applications/0/argv'],
      [[{ name: 'editor', argv: 'sh -c "rm -rf /"' }], '/workspaces/0/applications/0/argv'],
      [[{ name: 'editor', argv: [] }], '/workspaces/0/applications/0/argv'],
      [[{ name: 'editor', argv: ['a\u0000b'] }], '/workspaces/0/applications/0/argv/0'],
      [[{ name: 'editor', argv: [''] }], '/workspaces/0/applications/0/argv/0'],
      [[{ name: 'my editor', argv: ['x'] }], '/workspaces/0/applications/0/name'],
      [[{ name: '../x', argv: ['x'] }], '/workspaces/0/applications/0/name'],
      [[{ name: 'a', argv: ['x'] }, { name: 'a', argv: ['y'] }], '/workspaces/0/applications/1/name'],
    ];
    for (const [apps, path] of cases) {
      assert.throws(() => checkPolicy(doc(structuredClone(apps))), (e: { code: string; data: { path: string } }) => e.code === 'EPOLICY' && e.data.path === path, JSON.stringify(apps));
    }
  });

  it('mirrors: a policy the server takes is one every client takes (the client\'s own URL check; an invalid port, a bad host, the same folder twice are refused at publish)', () => {
    const doc = (mirrors: string[]) => ({ name: 'p', workspaces: [{ name: 'w', image: 'lab', mirrors }] });
    assert.doesNotThrow(() => checkPolicy(doc(['https://cdn.example/medv/images', 'http://10.0.0.5:8080/packs/'])));
    for (const mirrors of [['https://m.example:99999/'], ['http://%zz/'], ['https://m.example/a', 'https://m.example/a/']]) {
      assert.throws(() => checkPolicy(doc(mirrors)), (e: { code: string; data: { path: string } }) => e.code === 'EPOLICY' && e.data.path.startsWith('/workspaces/0/mirrors'), JSON.stringify(mirrors));
    }
  });
});
