/** `medv workspace …`: the client's workspaces. Thin over src/workspace. */
import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { MedvError } from '../core/errors.js';
import { DEFAULT_HELP } from '../core/paths.js';
import { parseDuration } from '../core/units.js';
import { collect, passesStatus, printJson, progressBar } from './common.js';

type Opts = Record<string, unknown>;

const ws = () => import('../workspace/index.js');

function rootOption(c: Command): Command {
  return c.option('--client-root <dir>', `client repositories (default ${DEFAULT_HELP.clientRoot})`);
}

/** One y/N question on the terminal; anything but y/yes is no. */
async function askYesNo(question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^\s*y(es)?\s*$/i.test(await rl.question(question));
  } finally {
    rl.close();
  }
}

const stderrLine = (m: string) => process.stderr.write(`medv: ${m}\n`);

/** `--share TAG=DIR`, repeatable: a host folder shared with the guest under a mount tag. */
function collectShare(value: string, previous: Array<{ tag: string; path: string }> = []): Array<{ tag: string; path: string }> {
  const eq = value.indexOf('=');
  if (eq <= 0 || eq === value.length - 1) throw new MedvError('EINVAL_ARG', `--share takes TAG=DIR (for example docs=$HOME/Documents), not ${JSON.stringify(value).slice(0, 60)}`);
  return [...previous, { tag: value.slice(0, eq), path: resolve(value.slice(eq + 1)) }];
}

const SHARE_HELP = 'share host folder DIR with the guest under mount tag TAG (repeatable; the policy must allow shared folders; read-only unless it allows writes; no symbolic link anywhere in DIR\'s path)';

export function workspaceCommand(): Command {
  const w = new Command('workspace').description('the workspaces your policies entitle you to: start (deploying or updating the image), stop, status, list');

  rootOption(w.command('start <name>'))
    .description('start a workspace: ask the server (or, offline, the cached policy) for it, deploy or update its image with TrimTransfer, and launch it as an encrypted VM')
    .option('--update', 'update to the newest published version before starting')
    .option('--no-update', 'start the version on this client even if a newer one is published')
    .option('--seed <dir>', 'a folder of host data (installers, documents, libraries) whose files may hold blocks of the image: hashed on a 4 KiB grid (ids cached) and used before the network at a deployment (repeatable; adds to Client.json\'s seedFolders)', collect, [])
    .option('--share <TAG=DIR>', SHARE_HELP, collectShare)
    .option('--read-only', 'a test run from the version\'s Test/ copy of its .vmc: the guest\'s writes go to a throw-away undo disk in Test/, deleted at stop')
    .addOption(new Option('--display <kind>', 'where the screen goes: none, vnc (unix socket, see workspace status), window (needs $DISPLAY)').choices(['none', 'window', 'vnc']).default('none'))
    .addOption(new Option('--accel <accel>', 'accelerator to try first (default: kvm when usable)').choices(['kvm', 'tcg']))
    .option('--json', 'print the result as JSON')
    .addHelpText('after', `
What it does:
  1. Logs in with the token \`medv login\` saved (sealed under this client's host key) and asks the
     server for the workspace: your policy's settings, the newest image version, and the image
     keys, sealed to this client. Not entitled: exit 4 and nothing is released.
  2. Offline (server unreachable): starts from the cached policy while the policy's offlineDays
     allow it, never after its expiry date (exit 13 offline, 14 expired, with the reason).
  3. A newer version: deployed on the first start, with --update, or when the policy does not
     suggest updates (suggestUpdate: false); otherwise you are asked on a terminal (y/N), and a
     script (no terminal, or --json) is told with one line. Only the blocks this client lacks are fetched
     (older versions, PrestagedImages, and the host data folders of --seed and Client.json's
     seedFolders are the seeds), from the policy's mirrors first, then the server; the policy's versionsToKeep old
     versions stay, older ones are deleted (never the running one).
  4. Starts the VM from the version folder's <image>.vmc and ImageState.xml (deployment writes
     them, with a copy in Test/ for --read-only test runs; what you read there is what runs):
     persistent: writes go into the disk; revertible: into an undo disk dropped at every stop; a
     suspended workspace resumes. Menu entries for published applications are
     written to ${DEFAULT_HELP.menu}.

Each step is printed once on stderr as it happens; the result is one line on stdout (with --json,
one JSON object: workspace, image, imageId, version, online, vmName, folder, deployed, vm, …).
A server that refuses the workspace (not entitled any more, expired) also ends its cached grant:
it will not start offline until a server grants it again. The administrator's orders answer at
the same contact: locked, it does not start (offline neither) until unlocked, its data kept;
wiped, this client deletes the workspace's keys, then its disks and saved state, and says so.

Examples:
  medv login --server https://console.example --user alice
  medv workspace start ledger
  medv workspace start ledger --update --display window
  medv workspace start ledger --no-update --json`)
    .action(async (name: string, o: Opts) => {
      const { startWorkspace } = await ws();
      if (o.display === 'window' && !process.env.DISPLAY) throw new MedvError('EINVAL_ARG', '--display window needs an X display: $DISPLAY is not set (use --display vnc on a headless host)');
      const bar = progressBar('fetch');
      let r;
      try {
        r = await startWorkspace(name, {
          clientRoot: o.clientRoot as string | undefined,
          update: o.update === true ? true : o.update === false ? false : undefined,
          display: o.display as 'none' | 'window' | 'vnc',
          accel: o.accel as 'kvm' | 'tcg' | undefined,
          readOnly: Boolean(o.readOnly),
          seeds: o.seed as string[],
          shares: o.share as Array<{ tag: string; path: string }> | undefined,
          onInfo: o.json ? undefined : (m) => { bar.stop(); stderrLine(m); },
          onWarning: (m) => { bar.stop(); stderrLine(`warning: ${m}`); },
          onProgress: (_l, d, t) => bar.update(d, t),
          confirmUpdate: !o.json && process.stdin.isTTY && process.stderr.isTTY ? (cur, latest) => askYesNo(`Version ${latest} of workspace ${name} is available (this client has ${cur}). Update now? [y/N] `) : undefined,
        });
      } finally {
        bar.stop();
      }
      if (o.json) { printJson(r); return; }
      // the steps went to stderr as they happened; the result is one line on stdout
      const vnc = r.vm.display.vncSocket ? `; screen on ${r.vm.display.vncSocket}` : '';
      process.stdout.write(`workspace ${r.workspace} ${r.resumed ? 'resumed' : 'started'}: ${r.image} version ${r.version}${r.online ? '' : ` (offline, ${r.offlineDaysLeft} days left)`}, VM ${r.vmName}${vnc}; stop it with: medv workspace stop ${r.workspace}\n`);
    });

  passesStatus(rootOption(w.command('run <name> <app>')), 'the application\'s (0-255), or 128+N when signal N ended it.')
    .description('run a published application of a workspace inside its guest (what its menu entry runs): start the workspace if needed, wait for its guest agent, run the application, and exit with its exit status')
    .addOption(new Option('--display <kind>', 'when the workspace must be started: where its screen goes (none: headless, for scripts and tests)').choices(['none', 'window', 'vnc']).default('window'))
    .addOption(new Option('--accel <accel>', 'accelerator to try first when starting (default: kvm when usable)').choices(['kvm', 'tcg']))
    .option('--no-update', 'when starting: start the version on this client even if a newer one is published')
    .option('--share <TAG=DIR>', `when starting: ${SHARE_HELP}`, collectShare)
    .option('--agent-timeout <duration>', 'how long to wait for the guest agent to answer: seconds, or with s, m, h', '300')
    .option('--timeout <duration>', 'how long the application may run (default: no limit): seconds, or with s, m, h')
    .option('--json', 'print the result as JSON (the application\'s output as text in stdout/stderr fields)')
    .addHelpText('after', `
What it does:
  1. When the workspace's VM is not running, starts it as \`medv workspace start\` does (with a
     window unless --display says otherwise; a start in progress elsewhere is waited for).
  2. Looks the application up in the workspace's policy (applications[].name) and waits for the
     QEMU guest agent in the guest (the VM of a workspace that publishes applications has its
     port; the guest must run qemu-guest-agent).
  3. Runs the application's argv in the guest through the agent (guest-exec: no shell, exactly
     the arguments the policy lists), waits for it to end, and copies its output to stdout and
     stderr. The workspace keeps running afterwards (medv workspace stop NAME).

The exit status is the application's own (0-255), or 128+N when signal N ended it, as a shell
reports it. When medv itself fails (not entitled, no such application, no guest agent answering)
it prints one error line and exits with its own status (the table below); with --json the result
tells them apart: {exitCode, signal} only when the application ran.

Examples:
  medv workspace run ledger editor
  medv workspace run ledger report --display none --json`)
    .action(async (name: string, app: string, o: Opts) => {
      const { runApplication, exitStatusOf } = await ws();
      if (o.display === 'window' && !process.env.DISPLAY) throw new MedvError('EINVAL_ARG', '--display window needs an X display: $DISPLAY is not set (use --display none or vnc on a headless host)');
      const agentTimeoutMs = parseDuration(String(o.agentTimeout), '--agent-timeout', { max: 3600_000 });
      const timeoutMs = o.timeout === undefined ? undefined : parseDuration(String(o.timeout), '--timeout', { max: 30 * 24 * 3600_000 });
      const r = await runApplication(name, app, {
        clientRoot: o.clientRoot as string | undefined,
        display: o.display as 'none' | 'window' | 'vnc',
        accel: o.accel as 'kvm' | 'tcg' | undefined,
        update: o.update === false ? false : undefined,
        shares: o.share as Array<{ tag: string; path: string }> | undefined,
        agentTimeoutMs, timeoutMs,
        onInfo: o.json ? undefined : stderrLine,
        onWarning: (m) => stderrLine(`warning: ${m}`),
      });
      const status = exitStatusOf(r);
      if (o.json) {
        printJson({
          workspace: r.workspace, application: r.application, argv: r.argv, vmName: r.vmName, started: r.started,
          ...(r.exitCode !== undefined ? { exitCode: r.exitCode } : {}), ...(r.signal !== undefined ? { signal: r.signal } : {}),
          stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), truncated: r.truncated,
        });
      } else {
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
      }
      process.exitCode = status;
    });

  rootOption(w.command('stop <name>'))
    .description('stop a running workspace as its policy says: shut down (a revertible one loses its changes) or suspend (encrypted saved state, resumed at the next start)')
    .option('--force', 'power it off at once (no suspend, no waiting for the guest)')
    .option('--timeout <duration>', 'how long the guest gets to shut down before it is forced: seconds, or with s, m, h (at most 1h)', '30')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExamples:\n  medv workspace stop ledger\n  medv workspace stop ledger --force --json')
    .action(async (name: string, o: Opts) => {
      const { stopWorkspace } = await ws();
      const timeoutS = parseDuration(String(o.timeout), '--timeout', { max: 3600_000 }) / 1000;
      const r = await stopWorkspace(name, { clientRoot: o.clientRoot as string | undefined, force: o.force === true, timeoutS });
      if (o.json) printJson(r);
      else process.stdout.write(`workspace ${name} ${r.suspended ? 'suspended (resumes at the next start)' : r.state === 'stopped' ? 'stopped' : r.state}${r.discarded ? '; its changes were discarded (revertible)' : ''}\n`);
    });

  rootOption(w.command('status <name>'))
    .description('what this client has of a workspace: state, versions, policy, offline allowance')
    .option('--json', 'print the status as JSON')
    .action(async (name: string, o: Opts) => {
      const { workspaceStatus } = await ws();
      const s = await workspaceStatus(name, { clientRoot: o.clientRoot as string | undefined });
      if (o.json) { printJson(s); return; }
      const lines = [
        `workspace: ${s.workspace} (policy ${s.policy.name} v${s.policy.version})`,
        `state:     ${s.state}${s.runningVersion !== undefined ? `, version ${s.runningVersion}` : ''}${s.suspended ? ' (a saved state waits)' : ''}`,
        `image:     ${s.image} (id ${s.imageId}): versions here ${s.versions.length ? s.versions.join(', ') : 'none'}; newest published when last online ${s.latestKnownVersion ?? 'none'}`,
        `folder:    ${s.folder}; VM ${s.vmName}`,
        `mode:      ${s.mode}, on stop ${s.onStop}`,
        `online:    last reached the server ${s.lastOnline}; offline use allowed ${s.offlineDays} days${s.expires ? `; expires after ${s.expires}` : ''}`,
      ];
      if (s.vm?.display.vncSocket) lines.push(`vnc:       ${s.vm.display.vncSocket}`);
      process.stdout.write(`${lines.join('\n')}\n`);
    });

  rootOption(w.command('list'))
    .description('the workspaces this client has been granted (as of the last start online); reads only local state: no login or server needed')
    .option('--json', 'print the list as JSON ([] when there are none)')
    .action(async (o: Opts) => {
      const { listWorkspaces } = await ws();
      const all = await listWorkspaces({ clientRoot: o.clientRoot as string | undefined });
      if (o.json) { printJson(all); return; }
      if (all.length === 0) { process.stdout.write('no workspaces yet: medv workspace start NAME\n'); return; }
      for (const s of all) process.stdout.write(`${s.workspace.padEnd(24)} ${String(s.state).padEnd(12)} ${s.image} v${s.runningVersion ?? s.versions.at(-1) ?? '-'} ${s.mode}\n`);
    });
  return w;
}
