/**
 * The layering of src/ (issue 19's acceptance), checked by scripts/check-layers.js: the client
 * side never imports src/server (nor the reverse), no folder cycle, files renamed or linked only in
 * src/core/fsio.ts. The script is run as a user would run it, on this tree and on small trees that
 * break each rule (so this test can fail).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT, tempDir } from './helpers/cli.js';

const SCRIPT = join(REPO_ROOT, 'scripts', 'check-layers.js');
const check = (src?: string) => spawnSync(process.execPath, [SCRIPT, ...(src ? [src] : [])], { encoding: 'utf8' });

function tree(root: string, files: Record<string, string>): string {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, name)), { recursive: true });
    writeFileSync(join(root, name), text);
  }
  return root;
}

describe('layout: scripts/check-layers.js', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => { dir = tempDir('layout'); });
  afterEach(() => dir.cleanup());

  it('src/ keeps its layers: no client-side import of src/server, no folder cycle, renames only in src/core/fsio.ts', () => {
    const r = check();
    assert.equal(r.stdout, '');
    assert.equal(r.status, 0, r.stderr);
  });

  it('finds each kind of violation (and only those) in a tree made to break the rules', () => {
    const src = tree(join(dir.path, 'src'), {
      'core/fsio.ts': "import * as fs from 'node:fs';\nexport const mv = (a: string, b: string) => fs.renameSync(a, b);\n",
      'server/names.ts': "export const X = 1;\n",
      'server/serve.ts': "import { Y } from '../workspace/w.js';\nexport const Z = Y;\n",
      'workspace/w.ts': "import { X } from '../server/names.js';\nimport { mv } from '../core/fsio.js';\nexport const Y = X; mv('a', 'b');\n",
      'repo/r.ts': "import type { X } from '../server/names.js';\n",
      'client/c.ts': "export async function f() { await import('../server/names.js'); }\n",
      'formats/f.ts': "import { c } from '../crypto/c.js';\nexport const f = c;\n",
      'crypto/c.ts': "import { f } from '../formats/f.js';\nexport const c = 1; void f;\n",
      'host/h.ts': "import { renameSync, symlinkSync } from 'node:fs';\nimport * as fs from 'node:fs';\n// fs.linkSync(a, b) in a comment is fine\nrenameSync('a', 'b'); symlinkSync('a', 'b'); fs.promises.link('a', 'b');\n",
    });
    const r = check(src);
    assert.equal(r.status, 1);
    const lines = r.stdout.trim().split('\n');
    const expect = [
      /^src\/client\/c\.ts:1: src\/client must not import src\/server/,
      /^src\/host\/h\.ts:1: imports renameSync from node:fs/,
      /^src\/host\/h\.ts:4: calls \.link\(/,
      /^src\/repo\/r\.ts:1: src\/repo must not import src\/server/,
      /^src\/server\/serve\.ts:1: src\/server must not import src\/workspace/,
      /^src\/workspace\/w\.ts:1: src\/workspace must not import src\/server/,
      /^folder cycle between src\/crypto, src\/formats: /,
      /^folder cycle between src\/server, src\/workspace: /,
    ];
    assert.equal(lines.length, expect.length, r.stdout);
    for (const re of expect) assert.ok(lines.some((l) => re.test(l)), `${re}\n${r.stdout}`);
  });
});
