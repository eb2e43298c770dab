import assert from 'node:assert/strict';
import { parseVmc, resolvePathRef, resolveWindowsPath, toWindowsPathRef } from '../../../src/formats/vmc/index.js';
import { fixture, medv } from './helpers.js';

const base = { vmcDir: '/srv/vms/xp' };
const mapped = { vmcDir: '/srv/vms/xp', driveMap: { c: '/mnt/windows-c', 'D:': '/data/d/' } };

describe('formats: vmc Windows paths', () => {
  it('resolves relative paths against the folder of the .vmc (either separator, dots)', () => {
    assert.equal(resolveWindowsPath('.\\xp.vhd', base), '/srv/vms/xp/xp.vhd');
    assert.equal(resolveWindowsPath('xp.vhd', base), '/srv/vms/xp/xp.vhd');
    assert.equal(resolveWindowsPath('Disks\\Sub Dir\\xp.vhd', base), '/srv/vms/xp/Disks/Sub Dir/xp.vhd');
    assert.equal(resolveWindowsPath('Disks/./a/../xp.vhd', base), '/srv/vms/xp/Disks/xp.vhd');
    assert.equal(resolveWindowsPath('.\\Ünïcode ✓.vhd', base), '/srv/vms/xp/Ünïcode ✓.vhd');
  });

  it('keeps relative paths inside that folder unless allowed to leave it', () => {
    assert.throws(() => resolveWindowsPath('..\\..\\Data\\data.vhd', base, { file: 'xp.vmc', element: 'x/relative' }),
      medv('EUNSUPPORTED', { file: 'xp.vmc', msg: /x\/relative: relative path .* leaves the folder of the \.vmc/ }));
    assert.throws(() => resolveWindowsPath('a\\..\\..\\b.vhd', base), medv('EUNSUPPORTED'));
    assert.equal(resolveWindowsPath('..\\..\\Data\\data.vhd', { ...base, allowOutsideVmcDir: true }), '/srv/Data/data.vhd');
  });

  it('maps drive letters through the drive map, and refuses an unmapped one', () => {
    assert.equal(resolveWindowsPath('C:\\Virtual Machines\\XP & Tools\\xp.vhd', mapped), '/mnt/windows-c/Virtual Machines/XP & Tools/xp.vhd');
    assert.equal(resolveWindowsPath('c:/x/y.vhd', mapped), '/mnt/windows-c/x/y.vhd');
    assert.equal(resolveWindowsPath('d:\\Data\\data.vhd', mapped), '/data/d/Data/data.vhd');
    let err: unknown;
    try { resolveWindowsPath('E:\\x.vhd', mapped, { file: 'xp.vmc', element: 'pathname/absolute', offset: 99 }); } catch (e) { err = e; }
    assert.ok(medv('EUNSUPPORTED', { file: 'xp.vmc', offset: 99, msg: /pathname\/absolute: drive E: of "E:\\\\x.vhd" is not mapped/ })(err));
    assert.equal((err as { data: { reason: string } }).data.reason, 'unmapped-drive');
    assert.throws(() => resolveWindowsPath('C:\\x.vhd', base), medv('EUNSUPPORTED', { msg: /drive C: .* not mapped/ }));
    assert.throws(() => resolveWindowsPath('C:\\..\\etc\\passwd', mapped), medv('EFORMAT', { msg: /climbs above its drive's root/ }));
  });

  it('refuses UNC, drive-relative, driveless rooted, empty and ill-formed paths', () => {
    assert.throws(() => resolveWindowsPath('\\\\server\\share\\x.vhd', mapped), medv('EUNSUPPORTED', { msg: /UNC/ }));
    assert.throws(() => resolveWindowsPath('\\\\?\\C:\\x.vhd', mapped), medv('EUNSUPPORTED', { msg: /UNC/ }));
    assert.throws(() => resolveWindowsPath('C:x.vhd', mapped), medv('EFORMAT', { msg: /drive-relative/ }));
    assert.throws(() => resolveWindowsPath('C:', mapped), medv('EFORMAT', { msg: /drive-relative/ }));
    assert.throws(() => resolveWindowsPath('\\x.vhd', mapped), medv('EUNSUPPORTED', { msg: /rooted but names no drive/ }));
    assert.throws(() => resolveWindowsPath('/etc/passwd', mapped), medv('EUNSUPPORTED', { msg: /rooted but names no drive/ }));
    assert.throws(() => resolveWindowsPath('', mapped), medv('EFORMAT', { msg: /empty path/ }));
    assert.throws(() => resolveWindowsPath('a\u0000b', mapped), medv('EFORMAT', { msg: /NUL/ }));
    assert.throws(() => resolveWindowsPath('a|b.vhd', mapped), medv('EFORMAT', { msg: /does not allow/ }));
    assert.throws(() => resolveWindowsPath('C:\\a\\b:c.vhd', mapped), medv('EFORMAT', { msg: /does not allow/ }));
    assert.throws(() => resolveWindowsPath('x'.repeat(40000), mapped), medv('EFORMAT', { msg: /longer than/ }));
  });

  it('refuses a bad drive map or folder as a bad argument', () => {
    assert.throws(() => resolveWindowsPath('C:\\x', { vmcDir: '/v', driveMap: { CC: '/x' } }), medv('EINVAL_ARG'));
    assert.throws(() => resolveWindowsPath('C:\\x', { vmcDir: '/v', driveMap: { C: 'relative/x' } }), medv('EINVAL_ARG'));
    assert.throws(() => resolveWindowsPath('x', { vmcDir: 'rel' }), medv('EINVAL_ARG'));
    assert.throws(() => resolvePathRef({ relative: 'x' }, { vmcDir: 'rel' }), medv('EINVAL_ARG'));
  });

  it('resolves a pathname pair: relative first, absolute second, unmappable ones listed as rejected', () => {
    const doc = parseVmc(fixture('xp.vmc'), { file: 'xp.vmc' });
    const disk = doc.settings.drives[0].path!;
    assert.deepEqual(resolvePathRef(disk, mapped).candidates, [
      { from: 'relative', windows: '.\\xp.vhd', path: '/srv/vms/xp/xp.vhd' },
      { from: 'absolute', windows: 'C:\\Virtual Machines\\XP & Tools\\xp.vhd', path: '/mnt/windows-c/Virtual Machines/XP & Tools/xp.vhd' },
    ]);
    const r = resolvePathRef(disk, base, { file: 'xp.vmc', element: 'pathname' });
    assert.deepEqual(r.candidates.map((c) => c.path), ['/srv/vms/xp/xp.vhd']);
    assert.equal(r.rejected.length, 1);
    assert.ok(medv('EUNSUPPORTED', { file: 'xp.vmc', msg: /pathname\/absolute: drive C:/ })(r.rejected[0].error));
    // the data disk's relative path leaves the folder and its drive is unmapped: the first error is thrown
    const data = doc.settings.drives[1].path!;
    assert.throws(() => resolvePathRef(data, base, { file: 'xp.vmc', element: 'pathname' }), medv('EUNSUPPORTED', { msg: /pathname\/relative: relative path/ }));
    assert.deepEqual(resolvePathRef(data, mapped).candidates.map((c) => c.path), ['/data/d/Data/data.vhd']);
    assert.throws(() => resolvePathRef({}, base), medv('EFORMAT', { msg: /neither/ }));
    // the same path twice is one candidate
    assert.equal(resolvePathRef({ relative: '.\\a.vhd', absolute: 'C:\\a.vhd' }, { vmcDir: '/c', driveMap: { C: '/c' } }).candidates.length, 1);
  });

  it('turns host paths into pathname pairs that resolve back to them', () => {
    const ref = toWindowsPathRef('/mnt/windows-c/VMs/xp/disk 1.vhd', { vmcDir: '/mnt/windows-c/VMs/xp', driveMap: { C: '/mnt/windows-c', X: '/mnt/windows-c/VMs' } });
    assert.deepEqual(ref, { relative: '.\\disk 1.vhd', absolute: 'X:\\xp\\disk 1.vhd' });
    const opts = { vmcDir: '/mnt/windows-c/VMs/xp', driveMap: { X: '/mnt/windows-c/VMs' } };
    for (const c of resolvePathRef(ref, opts).candidates) assert.equal(c.path, '/mnt/windows-c/VMs/xp/disk 1.vhd');
    assert.deepEqual(toWindowsPathRef('/elsewhere/a.vhd', { vmcDir: '/v' }), {});
    assert.deepEqual(toWindowsPathRef('/v/sub/a.vhd', { vmcDir: '/v' }), { relative: '.\\sub\\a.vhd' });
    assert.throws(() => toWindowsPathRef('rel/a.vhd', { vmcDir: '/v' }), medv('EINVAL_ARG'));
    assert.throws(() => toWindowsPathRef('/v/a:b.vhd', { vmcDir: '/v' }), medv('EINVAL_ARG'));
  });
});
