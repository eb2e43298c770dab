#!/usr/bin/env node
// Builds the Linux test guest (vm/README.md, "The Linux guest") into vm/build/linux/disk.img:
//   1. `apt-get download` Debian's cloud kernel, busybox-static, syslinux and qemu-guest-agent
//      with its Depends closure (its shared libraries) into vm/build/linux/debs (once; the names
//      it resolved are kept in debs/packages.json);
//   2. `dpkg-deb -x` them into vm/build/linux/x (once per .deb; nothing is installed on the host);
//   3. an initramfs (newc cpio written here, gzip) with busybox, vm/linux/initramfs/init and the
//      kernel modules of layout.modules with their dependencies, in load order;
//   4. a FAT boot partition made with mtools (kernel, initramfs, syslinux.cfg, SYSLINUX installed
//      by the extracted `syslinux` binary) and an ext4 root made by `mke2fs -d` from vm/linux/root
//      plus busybox and qemu-ga with the libraries it loads (readelf's NEEDED), both written at their offsets in a raw MBR disk with SYSLINUX's mbr.bin.
// No loop mounts. Re-runs are instant while vm/linux, this script, the cached .debs and the built
// image are unchanged (stamp.json); an image that was booted in place is rebuilt fresh. The image
// is not byte-reproducible across builds (file times in the FAT and ext4 metadata).
// The guest's marker is in no built file: the init script carries it in two pieces, and this
// script refuses an image that contains it whole.
//
// With `--variant NAME` (layout.json's variants: another kernel package, more modules) the same
// steps build vm/build/linux-NAME/disk.img from the same root and init, with their own cache.
//
// Usage: node scripts/build-linux-guest.js [--variant NAME] [--force] [--quiet]
// Host tools: apt-get, dpkg-deb, readelf (binutils), mke2fs (e2fsprogs), mformat/mcopy (mtools).
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'vm', 'linux');
const layout = JSON.parse(fs.readFileSync(path.join(src, 'layout.json'), 'utf8'));
const force = process.argv.includes('--force');
const quiet = process.argv.includes('--quiet');

function fail(message) {
  process.stderr.write(`build-linux-guest: ${message}\n`);
  process.exit(1);
}

// A variant (layout.variants) is the same guest with another kernel package and more modules, in
// its own folder: `--variant 9p` is vm/build/linux-9p with Debian's generic kernel (it has 9p).
const variantAt = process.argv.indexOf('--variant');
const variantName = variantAt < 0 ? '' : process.argv[variantAt + 1] ?? '';
if (variantAt >= 0 && !Object.hasOwn(layout.variants ?? {}, variantName)) {
  fail(`--variant takes one of ${Object.keys(layout.variants ?? {}).join(', ') || '(none)'}, not ${JSON.stringify(variantName)}`);
}
if (variantName && !/^[a-z0-9]+$/.test(variantName)) fail(`layout.variants: ${JSON.stringify(variantName)} is not a folder-safe name`);
const variant = variantName ? layout.variants[variantName] : {};
if (variant.kernel) layout.packages.kernel = variant.kernel;
layout.modules = [...layout.modules, ...(variant.modules ?? [])];
const out = path.join(root, 'vm', 'build', variantName ? `linux-${variantName}` : 'linux');
const debs = path.join(out, 'debs');
const work = path.join(out, 'work');
const image = path.join(out, 'disk.img');
const stampFile = path.join(out, 'stamp.json');
function log(message) {
  if (!quiet) process.stdout.write(`build-linux-guest: ${message}\n`);
}

/** Runs a tool; on failure exits with its stderr. */
function run(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20, ...opts });
  } catch (e) {
    if (e.code === 'ENOENT') fail(`${cmd} not found (run bash scripts/setup.sh, which installs the build tools)`);
    const stderr = e.stderr ? e.stderr.toString().trim().split('\n').slice(-15).join('\n') : e.message;
    fail(`${cmd} ${args.join(' ')} failed:\n${stderr}`);
  }
}

const T0 = Date.now();
/** With MEDV_BUILD_TIMING=1, prints the seconds spent so far. */
function step(what) {
  if (process.env.MEDV_BUILD_TIMING) process.stderr.write(`build-linux-guest: ${((Date.now() - T0) / 1000).toFixed(1)} s ${what}\n`);
}

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');

// ---------------------------------------------------------------------------------------------
// Layout checks

const marker = Buffer.from(layout.marker, 'ascii');
if (marker.length !== 32 || !/^[A-Za-z0-9-]+$/.test(layout.marker)) fail('layout.marker must be 32 ASCII letters, digits or dashes');
if (!(layout.markerSplit > 0 && layout.markerSplit < 32)) fail('layout.markerSplit must cut the marker in two');
const sector = layout.sectorBytes;
const bootStart = layout.boot.startLba * sector;
const bootBytes = layout.boot.sectors * sector;
const rootStart = layout.root.startLba * sector;
const rootBytes = layout.root.sectors * sector;
if (bootStart < 512 || bootStart + bootBytes > rootStart || rootStart + rootBytes > layout.imageBytes) fail('partitions overlap or do not fit');
if (rootBytes % layout.root.blockBytes !== 0 || rootStart % layout.root.blockBytes !== 0) fail('the root partition must be aligned to its block size');

// ---------------------------------------------------------------------------------------------
// 1. Downloads (cached)

const base = [layout.packages.kernel, layout.packages.busybox, ...layout.packages.bootloader, layout.packages.agent];
// The agent's shared libraries come from its Depends closure (packages.json records it as `closure`).
let wanted = base;

function cachedPackages() {
  try {
    const known = JSON.parse(fs.readFileSync(path.join(debs, 'packages.json'), 'utf8'));
    const all = [...base, ...(Array.isArray(known.closure) ? known.closure : [])];
    if (Array.isArray(known.closure) && all.every((p) => typeof known[p] === 'string' && fs.existsSync(path.join(debs, known[p])))) {
      wanted = [...new Set(all)];
      return known;
    }
  } catch {
    // missing or unreadable: download
  }
  return undefined;
}

/**
 * The packages `name` needs to run: its Depends (not PreDepends: init-system-helpers is dpkg
 * plumbing, not a library), transitively, first alternative of each; virtual packages skipped.
 */
function dependsClosure(name) {
  const seen = new Set();
  const todo = [name];
  while (todo.length) {
    const pkg = todo.pop();
    if (seen.has(pkg)) continue;
    seen.add(pkg);
    const text = run('apt-cache', ['depends', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', '--no-pre-depends', pkg]).toString();
    let alt = false;
    for (const line of text.split('\n')) {
      const m = line.match(/^\s*(\|)?Depends:\s*(\S+)/);
      if (!m) continue;
      const dep = m[2].replace(/:any$/, '');
      const skip = alt; // a later alternative of an `|` group
      alt = m[1] === '|';
      if (skip || dep.startsWith('<')) continue;
      todo.push(dep);
    }
  }
  seen.delete(name);
  return [...seen].sort();
}

/** A metapackage (linux-image-cloud-amd64) stands for the versioned image it depends on. */
function realPackage(name) {
  if (!name.startsWith('linux-image-')) return name;
  const text = run('apt-cache', ['depends', '--no-recommends', '--no-suggests', name]).toString();
  const dep = text.split('\n').map((l) => l.match(/^\s*Depends:\s*(linux-image-\S+)/)?.[1]).find(Boolean);
  if (!dep) fail(`apt-cache does not know ${name} (run apt-get update)`);
  return dep;
}

function download() {
  fs.mkdirSync(debs, { recursive: true });
  const aptKnows = () => {
    try {
      execFileSync('apt-cache', ['show', layout.packages.busybox], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  };
  if (!aptKnows()) {
    if (process.getuid?.() !== 0) fail(`apt does not know ${layout.packages.busybox}: run apt-get update as root`);
    log('apt-get update');
    run('apt-get', ['update', '-q']);
  }
  const tmp = fs.mkdtempSync(path.join(debs, 'dl-'));
  const known = {};
  let prior;
  try {
    prior = JSON.parse(fs.readFileSync(path.join(debs, 'packages.json'), 'utf8'));
  } catch {
    prior = {};
  }
  known.closure = dependsClosure(layout.packages.agent).filter((p) => !base.includes(p));
  wanted = [...new Set([...base, ...known.closure])];
  try {
    for (const name of wanted) {
      // a .deb fetched by an earlier build is kept (the kernel is 60 MB)
      if (typeof prior[name] === 'string' && fs.existsSync(path.join(debs, prior[name]))) {
        known[name] = prior[name];
        continue;
      }
      const pkg = realPackage(name);
      log(`apt-get download ${pkg}`);
      const before = new Set(fs.readdirSync(tmp));
      run('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', pkg], { cwd: tmp });
      const got = fs.readdirSync(tmp).filter((f) => !before.has(f) && f.endsWith('.deb'));
      if (got.length !== 1) fail(`apt-get download ${pkg} gave ${got.length} .deb files`);
      fs.renameSync(path.join(tmp, got[0]), path.join(debs, got[0]));
      known[name] = got[0];
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  fs.writeFileSync(path.join(debs, 'packages.json'), JSON.stringify(known, null, 2) + '\n');
  // .debs of an earlier layout (another kernel, an older version) are no longer needed.
  const keep = new Set(wanted.map((n) => known[n]));
  for (const f of fs.readdirSync(debs)) if (f.endsWith('.deb') && !keep.has(f)) fs.rmSync(path.join(debs, f));
  return known;
}

// ---------------------------------------------------------------------------------------------
// Stamp: what the image was built from

function listTree(dir, base = dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name)).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? listTree(p, base) : [path.relative(base, p)];
  });
}

function inputsHash(packages) {
  const h = crypto.createHash('sha256');
  h.update(fs.readFileSync(fileURLToPath(import.meta.url)));
  for (const rel of listTree(src)) {
    const p = path.join(src, rel);
    h.update(`\0${rel}\0${fs.statSync(p).mode & 0o100 ? 'x' : '-'}\0`).update(fs.readFileSync(p));
  }
  h.update(JSON.stringify(packages)).update(`\0variant=${variantName}`);
  return h.digest('hex');
}

let packages = cachedPackages();
if (packages && !force && fs.existsSync(image)) {
  try {
    const stamp = JSON.parse(fs.readFileSync(stampFile, 'utf8'));
    if (stamp.inputs === inputsHash(packages) && stamp.image === sha256(fs.readFileSync(image))) {
      log(`up to date (${path.relative(root, image)}, kernel ${stamp.kernel})`);
      process.exit(0);
    }
  } catch {
    // no or bad stamp: build
  }
}
const started = Date.now();
packages ??= download();
const inputs = inputsHash(packages);

// ---------------------------------------------------------------------------------------------
// 2. Extract (cached per .deb in vm/build/linux/x: the kernel's modules are ~100 MB)

const xroot = path.join(out, 'x');
fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });
fs.mkdirSync(xroot, { recursive: true });
const x = {};
for (const name of wanted) {
  x[name] = path.join(xroot, packages[name].replace(/\.deb$/, ''));
  if (fs.existsSync(path.join(x[name], '.medv-extracted'))) continue;
  fs.rmSync(x[name], { recursive: true, force: true });
  fs.mkdirSync(x[name], { recursive: true });
  run('dpkg-deb', ['-x', path.join(debs, packages[name]), x[name]]);
  fs.writeFileSync(path.join(x[name], '.medv-extracted'), '');
}
const extracted = new Set(Object.values(x).map((d) => path.basename(d)));
for (const d of fs.readdirSync(xroot)) if (!extracted.has(d)) fs.rmSync(path.join(xroot, d), { recursive: true, force: true });
step('extracted');
const kdir = x[layout.packages.kernel];
const vmlinuz = fs.readdirSync(path.join(kdir, 'boot')).find((f) => f.startsWith('vmlinuz-'));
if (!vmlinuz) fail(`no boot/vmlinuz-* in ${packages[layout.packages.kernel]}`);
const kernelVersion = vmlinuz.slice('vmlinuz-'.length);
const busybox = path.join(x[layout.packages.busybox], 'bin', 'busybox');
const bootloader = layout.packages.bootloader.map((n) => x[n]);
const findIn = (dirs, rel) => dirs.map((d) => path.join(d, rel)).find((p) => fs.existsSync(p)) ?? fail(`${rel} is in none of ${layout.packages.bootloader.join(', ')}`);
const syslinuxBin = findIn(bootloader, 'usr/bin/syslinux');
const mbrBin = fs.readFileSync(findIn(bootloader, 'usr/lib/syslinux/mbr/mbr.bin'));
if (mbrBin.length > 440) fail(`mbr.bin is ${mbrBin.length} bytes, more than the 440 before the disk signature`);

// ---------------------------------------------------------------------------------------------
// 3. Kernel modules: layout.modules and what they depend on (.modinfo `depends=`), deps first

const modRoot = path.join(kdir, 'lib', 'modules', kernelVersion, 'kernel');
const modPath = new Map();
for (const rel of listTree(modRoot)) {
  if (rel.endsWith('.ko')) modPath.set(path.basename(rel, '.ko').replace(/-/g, '_'), path.join(modRoot, rel));
}
const order = [];
const visiting = new Set();
function addModule(name) {
  const key = name.replace(/-/g, '_');
  if (order.includes(key)) return;
  if (visiting.has(key)) fail(`module dependency loop at ${key}`);
  const file = modPath.get(key) ?? fail(`kernel ${kernelVersion} has no module ${key} (built in? then drop it from layout.modules)`);
  visiting.add(key);
  const info = fs.readFileSync(file).toString('latin1');
  const deps = info.match(/(?:^|\0)depends=([^\0]*)/)?.[1] ?? '';
  for (const dep of deps.split(',').filter(Boolean)) addModule(dep);
  visiting.delete(key);
  order.push(key);
}
layout.modules.forEach(addModule);
step('modules resolved');

// ---------------------------------------------------------------------------------------------
// newc cpio, written here: device nodes need no mknod, and every entry has uid 0 and mtime 0.

function cpio(entries) {
  const parts = [];
  let ino = 1;
  const pad4 = (n) => Buffer.alloc((4 - (n % 4)) % 4);
  const hex = (n) => n.toString(16).padStart(8, '0');
  const add = (name, mode, data = Buffer.alloc(0), rdev = [0, 0]) => {
    const nameBuf = Buffer.from(`${name}\0`);
    const header = Buffer.from('070701' + [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, rdev[0], rdev[1], nameBuf.length, 0].map(hex).join(''), 'ascii');
    parts.push(header, nameBuf, pad4(header.length + nameBuf.length), data, pad4(data.length));
  };
  for (const e of entries) add(e.name, e.mode, e.data, e.rdev);
  add('TRAILER!!!', 0);
  const all = Buffer.concat(parts);
  return Buffer.concat([all, Buffer.alloc((512 - (all.length % 512)) % 512)]);
}

const dir = (name) => ({ name, mode: 0o040755 });
const file = (name, data, mode = 0o644) => ({ name, mode: 0o100000 | mode, data });
const symlink = (name, target) => ({ name, mode: 0o120777, data: Buffer.from(target) });

// The applets vm/linux/initramfs/init runs (it does not `busybox --install`: 400 links cost time).
const initApplets = ['sh', 'mount', 'mkdir', 'cat', 'insmod', 'findfs', 'usleep', 'switch_root'];
const initramfs = cpio([
  dir('bin'), dir('dev'), dir('etc'), dir('lib'), dir('lib/modules'), dir('newroot'), dir('proc'), dir('sys'),
  { name: 'dev/console', mode: 0o020600, rdev: [5, 1] },
  { name: 'dev/null', mode: 0o020666, rdev: [1, 3] },
  file('init', fs.readFileSync(path.join(src, 'initramfs', 'init')), 0o755),
  file('bin/busybox', fs.readFileSync(busybox), 0o755),
  ...initApplets.map((a) => symlink(`bin/${a}`, 'busybox')),
  file('etc/modules', Buffer.from(order.join('\n') + '\n')),
  ...order.map((m) => file(`lib/modules/${m}.ko`, fs.readFileSync(modPath.get(m)))),
]);
const initrd = zlib.gzipSync(initramfs, { level: 6 });
fs.writeFileSync(path.join(work, 'initrd.gz'), initrd);
step('initramfs');

// ---------------------------------------------------------------------------------------------
// 4a. The ext4 root: vm/linux/root + busybox and its applet links, made by mke2fs -d

const rootTree = path.join(work, 'root');
fs.cpSync(path.join(src, 'root'), rootTree, { recursive: true });
// Modes in the guest do not depend on the umask of the clone: 0755 directories and executables, else 0644.
(function normalize(dir) {
  fs.chmodSync(dir, 0o755);
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) normalize(p);
    else if (e.isFile()) fs.chmodSync(p, fs.statSync(p).mode & 0o100 ? 0o755 : 0o644);
  }
})(rootTree);
const initPath = path.join(rootTree, 'sbin', 'init');
const head = layout.marker.slice(0, layout.markerSplit);
const tail = layout.marker.slice(layout.markerSplit);
const initText = fs.readFileSync(initPath, 'utf8');
if (!initText.includes('@MARKER_HEAD@') || !initText.includes('@MARKER_TAIL@')) fail('vm/linux/root/sbin/init lacks the marker placeholders');
fs.writeFileSync(initPath, initText.replaceAll('@MARKER_HEAD@', head).replaceAll('@MARKER_TAIL@', tail)
  .replaceAll('@MARKER_REPEAT@', String(layout.markerRepeat)));
for (const d of ['bin', 'dev', 'proc', 'sys', 'run', 'tmp', 'var/medv', 'var/log']) fs.mkdirSync(path.join(rootTree, d), { recursive: true });
fs.chmodSync(path.join(rootTree, 'tmp'), 0o1777);
fs.copyFileSync(busybox, path.join(rootTree, 'bin', 'busybox'));
fs.chmodSync(path.join(rootTree, 'bin', 'busybox'), 0o755);
for (const applet of run(busybox, ['--list']).toString().split('\n').filter(Boolean)) {
  if (applet === 'busybox' || applet === 'init' || applet.includes('/')) continue;
  fs.symlinkSync('busybox', path.join(rootTree, 'bin', applet));
}

// The QEMU guest agent (qemu-ga) and the shared libraries it loads (ELF DT_NEEDED, transitively,
// found in the extracted closure), all in /lib where the dynamic loader looks without a cache.
const agentDirs = wanted.filter((n) => n !== layout.packages.kernel && !layout.packages.bootloader.includes(n)).map((n) => x[n]);
const agentBin = findIn([x[layout.packages.agent]], 'usr/sbin/qemu-ga');
const libDirs = agentDirs.flatMap((d) => ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib64', 'lib'].map((l) => path.join(d, l)));
function findLib(soname) {
  for (const d of libDirs) {
    const p = path.join(d, soname);
    if (fs.existsSync(p)) return fs.realpathSync(p);
  }
  return fail(`${soname}, needed by qemu-ga, is in no package of its Depends closure (${wanted.join(', ')})`);
}
const needed = (file) => run('readelf', ['-d', '-W', file]).toString().split('\n').map((l) => l.match(/\(NEEDED\)\s+Shared library: \[(.+)\]/)?.[1]).filter(Boolean);
const libs = new Map();
const libTodo = needed(agentBin);
while (libTodo.length) {
  const soname = libTodo.pop();
  if (libs.has(soname)) continue;
  const file = findLib(soname);
  libs.set(soname, file);
  libTodo.push(...needed(file));
}
const interp = 'ld-linux-x86-64.so.2';
if (!libs.has(interp)) libs.set(interp, findLib(interp));
fs.mkdirSync(path.join(rootTree, 'lib'), { recursive: true });
fs.mkdirSync(path.join(rootTree, 'lib64'), { recursive: true });
fs.mkdirSync(path.join(rootTree, 'usr', 'sbin'), { recursive: true });
for (const [soname, file] of libs) {
  fs.copyFileSync(file, path.join(rootTree, 'lib', soname));
  fs.chmodSync(path.join(rootTree, 'lib', soname), 0o755);
}
fs.symlinkSync(`/lib/${interp}`, path.join(rootTree, 'lib64', interp));
fs.copyFileSync(agentBin, path.join(rootTree, 'usr', 'sbin', 'qemu-ga'));
fs.chmodSync(path.join(rootTree, 'usr', 'sbin', 'qemu-ga'), 0o755);
step(`agent (${[...libs.keys()].sort().join(' ')})`);

// ---------------------------------------------------------------------------------------------
// 4b. The FAT boot partition: SYSLINUX, the kernel, the initramfs, syslinux.cfg (mtools)

const fat = path.join(work, 'boot.fat');
fs.writeFileSync(fat, Buffer.alloc(0));
fs.truncateSync(fat, bootBytes);
const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1', MTOOLSRC: '/dev/null' };
run('mformat', ['-i', fat, '-T', String(layout.boot.sectors), '-h', '16', '-s', '63', '-H', String(layout.boot.startLba),
  '-N', layout.boot.serial, '-v', layout.boot.label, '::'], { env: mtoolsEnv });
run(syslinuxBin, ['--install', fat], { env: { ...mtoolsEnv, PATH: process.env.PATH } });
const cfg = fs.readFileSync(path.join(src, 'syslinux.cfg'), 'utf8').replaceAll('@ROOT_LABEL@', layout.root.label);
fs.writeFileSync(path.join(work, 'syslinux.cfg'), cfg);
run('mcopy', ['-i', fat, '-o', path.join(kdir, 'boot', vmlinuz), '::/vmlinuz'], { env: mtoolsEnv });
run('mcopy', ['-i', fat, '-o', path.join(work, 'initrd.gz'), '::/initrd.gz'], { env: mtoolsEnv });
run('mcopy', ['-i', fat, '-o', path.join(work, 'syslinux.cfg'), '::/syslinux.cfg'], { env: mtoolsEnv });
step('boot partition');

// ---------------------------------------------------------------------------------------------
// 4c. The disk: MBR (mbr.bin, disk signature, two partitions), FAT at its offset, ext4 by mke2fs

const tmpImage = path.join(work, 'disk.img');
fs.writeFileSync(tmpImage, Buffer.alloc(0));
fs.truncateSync(tmpImage, layout.imageBytes);

function chs(lba) {
  const heads = 255, spt = 63;
  const c = Math.floor(lba / (heads * spt));
  if (c > 1023) return [0xfe, 0xff, 0xff];
  const h = Math.floor(lba / spt) % heads;
  const s = (lba % spt) + 1;
  return [h, s | ((c >> 2) & 0xc0), c & 0xff];
}
const mbr = Buffer.alloc(512);
mbrBin.copy(mbr, 0);
mbr.write(layout.boot.serial, 440, 'hex');
const partitions = [
  { active: true, type: 0x0e, start: layout.boot.startLba, sectors: layout.boot.sectors },
  { active: false, type: 0x83, start: layout.root.startLba, sectors: layout.root.sectors },
];
partitions.forEach((p, i) => {
  const e = 446 + 16 * i;
  mbr[e] = p.active ? 0x80 : 0;
  Buffer.from(chs(p.start)).copy(mbr, e + 1);
  mbr[e + 4] = p.type;
  Buffer.from(chs(p.start + p.sectors - 1)).copy(mbr, e + 5);
  mbr.writeUInt32LE(p.start, e + 8);
  mbr.writeUInt32LE(p.sectors, e + 12);
});
mbr.writeUInt16LE(0xaa55, 510);

const fd = fs.openSync(tmpImage, 'r+');
try {
  fs.writeSync(fd, mbr, 0, 512, 0);
  fs.writeSync(fd, fs.readFileSync(fat), 0, bootBytes, bootStart);
} finally {
  fs.closeSync(fd);
}
run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', String(layout.root.blockBytes), '-m', '0', '-L', layout.root.label,
  '-U', layout.root.uuid, '-E', `offset=${rootStart},hash_seed=${layout.root.uuid}`, '-d', rootTree,
  tmpImage, String(rootBytes / layout.root.blockBytes)], { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1700000000' } });

step('root partition');
const built = fs.readFileSync(tmpImage);
if (built.length !== layout.imageBytes) fail(`mke2fs left the image ${built.length} bytes long, not ${layout.imageBytes}`);
if (built.includes(marker)) fail('the plain marker appears in the built image; it must only come from the guest');
if (!built.includes(Buffer.from(head)) || !built.includes(Buffer.from(tail))) fail('the init script with the marker pieces is not in the image');

fs.renameSync(tmpImage, image);
fs.writeFileSync(stampFile, JSON.stringify({
  inputs, image: sha256(built), kernel: kernelVersion, packages, modules: order, agentLibs: [...libs.keys()].sort(), initrdBytes: initrd.length,
}, null, 2) + '\n');
step('checked');
fs.rmSync(work, { recursive: true, force: true });
log(`built ${path.relative(root, image)} in ${((Date.now() - started) / 1000).toFixed(1)} s (kernel ${kernelVersion}, initramfs ${(initrd.length / 1024).toFixed(0)} KiB, modules ${order.join(' ')})`);
