/** Tiny image readers for display tests: PNG (QEMU screendump), PPM (djpeg of vncsnapshot's JPEG), XWD (xwd of an X screen). */
import { crc32, deflateSync, inflateSync } from 'node:zlib';
import { readFileSync } from 'node:fs';

export interface Rgb { width: number; height: number; pixels: Buffer /* RGB, 3 bytes each */ }

/** 8-bit RGB or RGBA, non-interlaced PNG (what QEMU writes). */
export function readPng(path: string): Rgb {
  const b = readFileSync(path);
  if (!b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) throw new Error(`${path}: not a PNG`);
  let pos = 8;
  let width = 0, height = 0, colorType = 0;
  const idat: Buffer[] = [];
  while (pos < b.length) {
    const len = b.readUInt32BE(pos);
    const type = b.toString('latin1', pos + 4, pos + 8);
    const data = b.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') { width = data.readUInt32BE(0); height = data.readUInt32BE(4); colorType = data[9]; if (data[8] !== 8 || data[12] !== 0) throw new Error('unsupported PNG'); }
    if (type === 'IDAT') idat.push(data);
    pos += 12 + len;
  }
  const bpp = colorType === 6 ? 4 : 3;
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * bpp;
  const out = Buffer.alloc(width * height * 3);
  let prev = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? line[x - bpp] : 0, up = prev[x], c = x >= bpp ? prev[x - bpp] : 0;
      const p = a + up - c, pa = Math.abs(p - a), pb = Math.abs(p - up), pc = Math.abs(p - c);
      const pred = f === 1 ? a : f === 2 ? up : f === 3 ? (a + up) >> 1 : f === 4 ? (pa <= pb && pa <= pc ? a : pb <= pc ? up : c) : 0;
      line[x] = (line[x] + pred) & 0xff;
    }
    for (let x = 0; x < width; x++) line.copy(out, (y * width + x) * 3, x * bpp, x * bpp + 3);
    prev = line;
  }
  return { width, height, pixels: out };
}

/** Binary PPM (P6, maxval 255). */
export function readPpm(path: string): Rgb {
  const b = readFileSync(path);
  const m = /^P6\s+(\d+)\s+(\d+)\s+255\s/.exec(b.toString('latin1', 0, 64));
  if (!m) throw new Error(`${path}: not a binary PPM`);
  return { width: Number(m[1]), height: Number(m[2]), pixels: b.subarray(m[0].length) };
}

/** XWD as written by `xwd -root` on a TrueColor screen (ZPixmap, 24 or 32 bits per pixel). */
export function readXwd(path: string): Rgb {
  const b = readFileSync(path);
  const headerSize = b.readUInt32BE(0);
  const width = b.readUInt32BE(16), height = b.readUInt32BE(20);
  const bitsPerPixel = b.readUInt32BE(44), bytesPerLine = b.readUInt32BE(48), ncolors = b.readUInt32BE(76);
  const byteOrder = b.readUInt32BE(28);
  if (bitsPerPixel !== 32 && bitsPerPixel !== 24) throw new Error(`${path}: ${bitsPerPixel} bits per pixel is not supported`);
  const bytes = bitsPerPixel / 8;
  const data = headerSize + ncolors * 12;
  const out = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = data + y * bytesPerLine + x * bytes;
      const v = byteOrder === 0 ? b.readUIntLE(p, bytes) : b.readUIntBE(p, bytes);
      out[(y * width + x) * 3] = (v >> 16) & 0xff; out[(y * width + x) * 3 + 1] = (v >> 8) & 0xff; out[(y * width + x) * 3 + 2] = v & 0xff;
    }
  }
  return { width, height, pixels: out };
}

/** How many pixels differ from the most common colour (the background): 0 for a blank frame. */
export function nonBackgroundPixels(img: Rgb): number {
  const counts = new Map<number, number>();
  const n = img.width * img.height;
  for (let i = 0; i < n; i++) {
    const v = (img.pixels[i * 3] << 16) | (img.pixels[i * 3 + 1] << 8) | img.pixels[i * 3 + 2];
    counts.set(v, (counts.get(v) ?? 0) + 1);
  }
  const background = Math.max(...counts.values());
  return n - background;
}

/** Write RGB pixels as a PNG (to look at what a test saw). */
export function encodePng(img: Rgb): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td) >>> 0);
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(img.width, 0); ihdr.writeUInt32BE(img.height, 4); ihdr[8] = 8; ihdr[9] = 2;
  const raw = Buffer.alloc((img.width * 3 + 1) * img.height);
  for (let y = 0; y < img.height; y++) img.pixels.copy(raw, y * (img.width * 3 + 1) + 1, y * img.width * 3, (y + 1) * img.width * 3);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
