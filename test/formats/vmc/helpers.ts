/** Shared by the .vmc / ImageState tests: fixtures, a peer XML reader (Python's expat), error matchers. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MedvError } from '../../../src/core/errors.js';

/** test/formats/vmc/fixtures in the source tree (tests run from dist/). */
export const FIXTURES = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../test/formats/vmc/fixtures');

export function fixture(name: string): Buffer {
  return readFileSync(resolve(FIXTURES, name));
}

/** A MedvError matcher for assert.throws: code, file, and optionally a message part and offset. */
export function medv(code: string, opts: { file?: string; msg?: RegExp; offset?: number; element?: string } = {}) {
  return (e: unknown): boolean => {
    if (!(e instanceof MedvError)) return false;
    if (e.code !== code) assert(false, `code ${e.code}, expected ${code}: ${e.message}`);
    if (opts.file !== undefined && e.data.file !== opts.file) assert(false, `file ${String(e.data.file)}: ${e.message}`);
    if (opts.msg && !opts.msg.test(e.message)) assert(false, `message ${e.message} does not match ${opts.msg}`);
    if (opts.offset !== undefined && e.data.offset !== opts.offset) assert(false, `offset ${String(e.data.offset)}, expected ${opts.offset}: ${e.message}`);
    if (opts.element !== undefined && e.data.element !== opts.element) assert(false, `element ${String(e.data.element)}, expected ${opts.element}`);
    return true;
  };
}

function assert(ok: boolean, msg: string): void {
  if (!ok) throw new Error(msg);
}

const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/**
 * Read an XML file with Python's expat (xml.dom.minidom) - a peer that knows nothing of our code -
 * and return, for every leaf element, its slash path (with [@id=N] steps) and text, plus the root's name.
 */
export function peerRead(file: string): { root: string; encoding: string | null; leaves: Record<string, string> } {
  const script = `
import json, sys, xml.dom.minidom as m
d = m.parse(sys.argv[1])
out = {}
def walk(n, path):
    kids = [c for c in n.childNodes if c.nodeType == c.ELEMENT_NODE]
    step = n.tagName + ('[@id=%s]' % n.getAttribute('id') if n.hasAttribute('id') else '')
    p = path + '/' + step if path else step
    if not kids:
        out[p] = ''.join(c.data for c in n.childNodes if c.nodeType in (c.TEXT_NODE, c.CDATA_SECTION_NODE))
    for c in kids: walk(c, p)
walk(d.documentElement, '')
print(json.dumps({'root': d.documentElement.tagName, 'encoding': d.encoding, 'leaves': out}))
`;
  return JSON.parse(execFileSync(PYTHON, ['-c', script, file], { encoding: 'utf8' }));
}
