#!/usr/bin/env node
// Builds the test guest: vm/guest.asm -> vm/build/guest.bin (nasm: boot sector + stage 2) ->
// vm/build/guest.img (guest.bin followed by zeros, layout.imageBytes long; vm/README.md). The layout numbers come from
// vm/layout.json and reach nasm as -D defines; the marker reaches it only XOR-ed, and this script
// checks that neither the boot sector nor the fresh image contains the plain marker.
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
try {
  execFileSync('nasm', ['-f', 'bin', ...defines, path.join(vm, 'guest.asm'), '-o', bin], { stdio: ['ignore', 'inherit', 'inherit'] });
} catch (e) {
  if (e.code === 'ENOENT') fail('nasm not found (apt-get install nasm, or run bash scripts/setup.sh)');
  fail(`nasm failed (${e.message})`);
}

const sector = fs.readFileSync(bin);
if (sector.length % 512 !== 0 || sector.length > layout.counterLba * 512 || sector.readUInt16LE(510) !== 0xaa55) {
  fail(`${bin} (${sector.length} bytes) is not a boot sector plus stage 2 ending before the counter sector`);
}
const image = Buffer.alloc(layout.imageBytes);
sector.copy(image, 0);
if (image.includes(marker)) fail('the plain marker appears in the built image; it must only come from the guest');

const img = path.join(out, 'guest.img');
let same = false;
try {
  same = fs.readFileSync(img).equals(image);
} catch {
  // missing: write it
}
if (!same) {
  const tmp = `${img}.tmp`;
  fs.writeFileSync(tmp, image);
  fs.renameSync(tmp, img);
}
