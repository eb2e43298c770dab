/**
 * Parent locator data of differencing VHDs. The header's locator entries point at the data:
 *   W2ku  absolute Windows path, UTF-16LE      W2ru  relative Windows path, UTF-16LE
 *   Wi2k  absolute path, ANSI (deprecated)     Wi2r  relative path, ANSI (deprecated)
 *   MacX  file URL, UTF-8                      Mac   Mac OS alias blob (opaque to us)
 *   MdvR  medv's raw-parent record (rawparent.ts), not a path
 * Note that the header's parent unicode name is UTF-16BE while W2ku/W2ru data is UTF-16LE.
 * "Platform data space" is written in bytes by Virtual PC and Hyper-V and in sectors by the spec:
 * dataSpaceBytes() accepts both.
 */
import { type ParseContext, SECTOR, formatError } from './common.js';
import type { LocatorEntry } from './dynheader.js';

export const PLATFORM_W2KU = 'W2ku';
export const PLATFORM_W2RU = 'W2ru';
export const PLATFORM_WI2K = 'Wi2k';
export const PLATFORM_WI2R = 'Wi2r';
export const PLATFORM_MAC = 'Mac ';
export const PLATFORM_MACX = 'MacX';
/** medv's record of a raw parent (formats/vhd/rawparent.ts): not a path, never followed. */
export const PLATFORM_MDVR = 'MdvR';
export const KNOWN_PLATFORMS = [PLATFORM_W2KU, PLATFORM_W2RU, PLATFORM_WI2K, PLATFORM_WI2R, PLATFORM_MAC, PLATFORM_MACX, PLATFORM_MDVR];
/** Upper bound for one locator's data (a path): 64 KiB. */
export const MAX_LOCATOR_DATA = 65536;

/** Reserved space of a locator in bytes: the stored value is bytes when it can hold the data,
 *  else sectors (the spec's unit). */
export function dataSpaceBytes(l: LocatorEntry): number {
  return l.dataSpace >= l.dataLength ? l.dataSpace : l.dataSpace * SECTOR;
}

/** Decode a locator's data into a path (or URL for MacX). Returns undefined for opaque platforms. */
export function decodeLocatorData(platform: string, data: Buffer, ctx?: ParseContext): string | undefined {
  if (data.length > MAX_LOCATOR_DATA) throw formatError('EFORMAT', `parent locator data too long (${data.length} bytes)`, ctx);
  let s: string;
  switch (platform) {
    case PLATFORM_W2KU:
    case PLATFORM_W2RU:
      s = data.subarray(0, data.length & ~1).toString('utf16le');
      break;
    case PLATFORM_WI2K:
    case PLATFORM_WI2R:
      s = data.toString('latin1');
      break;
    case PLATFORM_MACX:
      s = data.toString('utf8');
      break;
    default:
      return undefined;
  }
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

export function encodeLocatorData(platform: string, path: string): Buffer {
  switch (platform) {
    case PLATFORM_W2KU:
    case PLATFORM_W2RU:
      return Buffer.from(path, 'utf16le');
    case PLATFORM_WI2K:
    case PLATFORM_WI2R:
      return Buffer.from(path, 'latin1');
    case PLATFORM_MACX:
      return Buffer.from(path, 'utf8');
    default:
      throw formatError('EINVAL_ARG', `cannot encode parent locator for platform '${platform}'`, undefined);
  }
}
