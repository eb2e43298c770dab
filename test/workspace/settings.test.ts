/**
 * A workspace's policy entry as the client checks it (src/workspace/settings.ts): what a server
 * stored, or a client cached, before published applications took an `argv` list still starts.
 */
import assert from 'node:assert/strict';
import { MedvError } from '../../src/core/errors.js';
import { checkSettings } from '../../src/workspace/settings.js';

describe('workspace settings: a policy entry from an earlier medv', () => {
  const entry = (applications: unknown[]) => ({ name: 'office', image: 'office-img', mode: 'persistent', applications });

  it('an application in the earlier {name, command} form is left out with one warning; the argv ones stay; the input is not changed', () => {
    const warnings: string[] = [];
    const given = entry([
      { name: 'word', command: 'C:\\Program Files\\Word\\word.exe /n' },
      { name: 'calc', title: 'Calculator', argv: ['calc.exe'] },
    ]);
    const s = checkSettings(given, 'office', 'branch', (m) => warnings.push(m));
    assert.deepEqual(s.applications?.map((a) => a.name), ['calc']);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /workspace office: application word left out: .*`command`.*argv/);
    assert.equal((given.applications as unknown[]).length, 2);
  });

  it('without a warning callback the entry still passes (a cached offline grant); a malformed application is still refused', () => {
    assert.deepEqual(checkSettings(entry([{ name: 'old', command: 'run me' }]), 'office').applications, []);
    assert.throws(() => checkSettings(entry([{ name: 'both', command: 'x', argv: ['x'] }]), 'office'),
      (e: unknown) => e instanceof MedvError && e.code === 'EPOLICY');
    assert.throws(() => checkSettings(entry([{ name: 'nothing' }]), 'office'), (e: unknown) => e instanceof MedvError && e.code === 'EPOLICY');
  });

  it('a hostile name in a legacy application does not reach the warning raw', () => {
    const warnings: string[] = [];
    checkSettings(entry([{ name: 'a\u001b[2Jb\nX', command: 'x' }]), 'office', 'p', (m) => warnings.push(m));
    assert.doesNotMatch(warnings[0], /[\u0000-\u001f\u007f]/);
  });
});
