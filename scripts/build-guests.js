#!/usr/bin/env node
// Builds the test guest: vm/guest.asm -> vm/build/guest.bin (nasm: boot sector + stage 2) ->
// vm/build/guest.img (guest.bin followed by zeros, layout.imageBytes long; vm/README.md). The layout numbers come from
// vm/layout.json and reach nasm as -D defines; the marker reaches it only XOR-ed, and this script
// checks that neither the boot sector nor the fresh image contains the plain marker.
// Also builds vm/build/internal-error.img from vm/internal-error.asm (a guest KVM cannot run).
// Plain Node, no dependencies. Rewrites guest.img only when its bytes differ (a booted image
// has a higher counter, so it is reset to a fresh one).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const vm = path.join(root, 'vm');
const out = path.join(vm, 'build');
const layout = JSON.parse(fs.readFileSync(path.join(vm, 'layout.json'), 'utf8'));

function fail(message) {
  process.stderr.write(`build-guests: ${message}\n`);
  process.exit(1);
}

const marker = Buffer.from(layout.marker, 'ascii');
if (marker.length !== 32) fail(`layout.marker must be 32 ASCII bytes, got ${marker.length}`);
if (Buffer.byteLength(layout.counterMagic, 'ascii') !== 8) fail('layout.counterMagic must be 8 ASCII bytes');
if ((layout.markerLba + layout.markerSectors) * layout.sectorBytes > layout.imageBytes) fail('marker does not fit in the image');
const xored = [...marker].map((b) => '0x' + (b ^ layout.markerXor).toString(16).padStart(2, '0'));

fs.mkdirSync(out, { recursive: true });
const bin = path.join(out, 'guest.bin');
const defines = [
  `-DCOUNTER_LBA=${layout.counterLba}`,
  `-DCOUNTER_MAGIC="${layout.counterMagic}"`,
  `-DMARKER_LBA=${layout.markerLba}`,
  `-DMARKER_SECTORS=${layout.markerSectors}`,
  `-DMARKER_XOR=${layout.markerXor}`,
  `-DMARKER_XORED=${xored.join(',')}`,
];
nasm([...defines, path.join(vm, 'guest.asm'), '-o', bin]);

function nasm(args) {
  try {
    execFileSync('nasm', ['-f', 'bin', ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
  } catch (e) {
    if (e.code === 'ENOENT') fail('nasm not found (apt-get install nasm, or run bash scripts/setup.sh)');
    fail(`nasm failed (${e.message})`);
  }
}

const sector = fs.readFileSync(bin);
if (sector.length % 512 !== 0 || sector.length > layout.counterLba * 512 || sector.readUInt16LE(510) !== 0xaa55) {
  fail(`${bin} (${sector.length} bytes) is not a boot sector plus stage 2 ending before the counter sector`);
}
const image = Buffer.alloc(layout.imageBytes);
sector.copy(image, 0);
if (image.includes(marker)) fail('the plain marker appears in the built image; it must only come from the guest');

writeIfChanged(path.join(out, 'guest.img'), image);

// A guest that KVM cannot run (vm/internal-error.asm): tests of internal-error detection.
const ieBin = path.join(out, 'internal-error.bin');
nasm([path.join(vm, 'internal-error.asm'), '-o', ieBin]);
const ieImage = Buffer.alloc(layout.imageBytes);
fs.readFileSync(ieBin).copy(ieImage, 0);
writeIfChanged(path.join(out, 'internal-error.img'), ieImage);

function writeIfChanged(file, bytes) {
  let same = false;
  try {
    same = fs.readFileSync(file).equals(bytes);
  } catch {
    // missing: write it
  }
  if (!same) {
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  }
}
