/**
 * src/api/names.ts: one rule per name, and every consumer agrees with it. A workspace name the
 * policy schema accepts works end to end (server check, VM name, run folder, desktop entries); one
 * it refuses is refused by all of them. The same for user names (server check, data/Users/<user>).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  checkClientId, checkImageName, checkUserName, checkVmName, checkWorkspaceName, CLIENT_ID_RE, IMAGE_NAME_RE,
  parseRepoFileName, PRINCIPAL_NAME_PATTERN, WORKSPACE_NAME_PATTERN,
} from '../../src/api/names.js';
import { checkPolicy } from '../../src/api/policy.js';
import { POLICY_SCHEMA } from '../../src/api/policy-schema.js';
import { IMAGE_NAME_RE as CKM_IMAGE_NAME_RE } from '../../src/formats/ckm/index.js';
import { vmRunDir } from '../../src/host/rundir.js';
import { writeDesktopEntries } from '../../src/repo/desktop.js';
import { openClientRoot, userDir } from '../../src/repo/paths.js';
import { instanceName } from '../../src/workspace/identity.js';
import { MedvError } from '../../src/core/errors.js';
import { tempDir } from '../helpers/cli.js';

const CANDIDATES = [
  'a', 'Z9', 'win10', 'A.b_c-d', 'a..b', 'x'.repeat(64), 'x'.repeat(65),
  'a@b', 'alice@example.org', '@a', '_a', '-a', '.a', '.', '..', '', 'a/b', 'a b', 'a+b', 'a%b', 'a#b', 'ä', 'a\nb', 'a\0b',
];

const accepts = (f: () => unknown): boolean => {
  try { f(); return true; } catch (e) {
    assert.ok(e instanceof MedvError, String(e));
    return false;
  }
};

describe('api/names', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('names'); });
  afterEach(() => dir.cleanup());

  it('a workspace name the policy schema accepts works as the server\'s, a VM name, a run folder and desktop entries; one it refuses is refused by all', () => {
    const runRoot = join(dir.path, 'run');
    const apps = join(dir.path, 'applications');
    const c = openClientRoot(join(dir.path, 'client'));
    // a workspace's VM name is scoped to its client root and user (src/workspace/identity.ts)
    const vmName = (name: string) => instanceName(c, 'alice', name);
    let schemaAccepted = 0;
    for (const name of CANDIDATES) {
      const schema = accepts(() => checkPolicy({ name: 'p', workspaces: [{ name, image: 'img' }] }));
      const server = accepts(() => checkWorkspaceName(name));
      const vm = accepts(() => checkVmName(vmName(name)));
      const runFolder = accepts(() => vmRunDir(vmName(name), runRoot));
      const desktop = accepts(() => writeDesktopEntries({ id: vmName(name), workspace: name, clientRoot: c.root }, [{ name: 'Editor', argv: ['ed'] }], { medv: '/usr/bin/medv', dir: apps }));
      assert.deepEqual({ server, vm, runFolder, desktop }, { server: schema, vm: schema, runFolder: schema, desktop: schema }, JSON.stringify(name));
      if (!schema) continue;
      schemaAccepted++;
      assert.ok(vmName(name).startsWith(`${name.slice(0, 32)}-`), 'the VM name starts with its workspace\'s');
      assert.ok(existsSync(join(runRoot, vmName(name))));
      const entry = join(apps, `medv-${vmName(name)}-editor.desktop`);
      assert.match(readFileSync(entry, 'utf8'), new RegExp(`^X-Medv-Workspace=${name.replace(/\./g, '\\.')}$`, 'm'));
    }
    assert.equal(schemaAccepted, 6);
    // The defect this guards: '@' passed the schema and was refused by the desktop entry and the run folder.
    assert.equal(accepts(() => checkPolicy({ name: 'p', workspaces: [{ name: 'a@b', image: 'img' }] })), false);
  });

  it('a user name the policy schema accepts is a user on the server and a folder on the client; one it refuses is neither', () => {
    const c = openClientRoot(join(dir.path, 'root'));
    let accepted = 0;
    for (const user of CANDIDATES) {
      const schema = accepts(() => checkPolicy({ name: 'p', users: [user], groups: [user], workspaces: [{ name: 'w', image: 'img' }] }));
      const server = accepts(() => checkUserName(user));
      const folder = accepts(() => userDir(c, user));
      assert.deepEqual({ server, folder }, { server: schema, folder: schema }, JSON.stringify(user));
      if (schema) { accepted++; assert.ok(existsSync(join(c.users, user))); }
    }
    assert.equal(accepted, 8); // the workspace names, and two with '@'
  });

  it('one definition per rule: the schema\'s patterns, the image rule of src/formats/ckm, client ids, repository files', () => {
    const ws = POLICY_SCHEMA.definitions.workspace.properties;
    assert.equal(ws.name.pattern, WORKSPACE_NAME_PATTERN);
    assert.equal(ws.image.pattern, IMAGE_NAME_RE.source);
    assert.equal(POLICY_SCHEMA.properties.users.items.pattern, PRINCIPAL_NAME_PATTERN);
    assert.equal(IMAGE_NAME_RE, CKM_IMAGE_NAME_RE);
    for (const name of CANDIDATES) {
      assert.equal(accepts(() => checkImageName(name)), accepts(() => checkWorkspaceName(name)), JSON.stringify(name));
      assert.equal(parseRepoFileName(`${name}_1.ckm`)?.name === name, IMAGE_NAME_RE.test(name), JSON.stringify(name));
    }
    assert.equal(checkClientId('0123456789abcdef'), '0123456789abcdef');
    for (const bad of ['', 'a/b', 'c'.repeat(65), 'a@b']) assert.equal(CLIENT_ID_RE.test(bad), false);
    assert.throws(() => checkClientId('pc/1'), /client must be 1 to 64/);
    assert.throws(() => checkWorkspaceName('a@b'), /workspace must be 1 to 64 letters, digits, '\.', '_' or '-' \(starting with a letter or digit\), not "a@b"/);
  });
});
