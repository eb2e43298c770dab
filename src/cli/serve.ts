/** `medv serve`: the image repository over HTTP (static files with ranges, tus uploads), users and policies under /api/. Thin over src/server. */
import { Command } from 'commander';
import { MedvError } from '../core/errors.js';
import { parseDuration, parseSize } from '../core/units.js';
import { printJson, raises } from './common.js';

type Opts = Record<string, unknown>;

function parseCount(v: string, what: string, max: number): number {
  if (!/^[0-9]{1,9}$/.test(String(v)) || Number(v) > max) throw new MedvError('EINVAL_ARG', `${what} must be an integer from 0 to ${max}, not ${JSON.stringify(v)}`);
  return Number(v);
}

export function serveCommand(): Command {
  return raises(new Command('serve'), ['EINVAL_ARG', 'ENOENT', 'EEXIST', 'EREADONLY', 'EUNSAFE', 'EINSECURE', 'EBADKEY', 'EFORMAT', 'ENETWORK', 'EBUSY'], {
    EBUSY: 'the port is in use', EUNSAFE: 'a root that others may write into', EINSECURE: 'a key or token file readable by others', ENETWORK: 'the database cannot be reached',
  })
    .description('serve an image repository over HTTP (packs and indexes with Range requests, uploads with the admin token), and users and policies under /api/')
    .requiredOption('--root <dir>', 'repository folder: images/ is served, .uploads/ holds unfinished uploads (created if missing)')
    .option('--port <port>', 'TCP port (0: the system picks one)', '8080')
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--admin-token-file <file>', 'file holding the admin token (mode 0600); default <root>/admin.token, generated on first start')
    .option('--server-key <file>', 'the server master key that wraps image keys in the database (32 bytes, mode 0600); default <root>/server.key, generated on first start; instances sharing a database must share it')
    .option('--max-upload-size <size>', 'largest file an upload may declare (bytes, or with K, M, G, T)', '64G')
    .option('--max-uploads <n>', 'upload requests in progress at once (more get 503 and retry)', '4')
    .option('--db <url>', 'database for users and policies: postgres://user:pass@host/db (several instances may share one); default $MEDV_DB, else SQLite in <root>/medv.db (prefer MEDV_DB: a password on the command line is visible in ps)')
    .option('--token-lifetime <duration>', 'how long a login token is valid: seconds, or with s, m, h, d (1s to 366d)', '12h')
    .option('--max-failed-logins <n>', 'failed logins of one user name from one address before that name is refused from that address for a while (30 s, doubling, up to 15 min)', '5')
    .option('--max-failed-logins-per-address <n>', 'failed logins from one client address (any names) before its logins are refused for a while', '20')
    .option('--max-failed-logins-per-name <n>', 'failed logins of one name from all addresses before its logins are slowed (one check at a time, 1 s to 8 s apart; never refused)', '10')
    .option('--audit-retention <duration>', 'audit entries older than this are deleted (s, m, h, d)', '90d')
    .option('--audit-max-rows <n>', 'the audit log keeps at most this many rows (the oldest go first)', '1000000')
    .option('--max-clients-per-user <n>', 'clients one user may have (registered by grants); a new one past it drops the least recently seen with its reports', '32')
    .option('--max-reports-per-user <n>', 'client report rows kept per user (the least recently received go first)', '1024')
    .option('--tls-cert <file>', 'speak HTTPS with this certificate chain (PEM); clients pin its CA with --ca')
    .option('--tls-key <file>', 'the private key of --tls-cert (PEM, mode 0600)')
    .option('--allow-plain-http', 'accept passwords and tokens over plain HTTP from other hosts (only behind a TLS-terminating proxy); loopback is always accepted')
    .option('--trust-proxy <cidr>', 'a reverse proxy (address or CIDR; repeat for several) whose X-Forwarded-For names the client and whose X-Forwarded-Proto: https counts as TLS', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--max-connections <n>', 'open connections at once; at the cap the slowest connection of the busiest address makes room', '512')
    .option('--max-connections-per-address <n>', 'open connections from one client address (trusted proxies excepted)', '32')
    .option('--header-timeout <duration>', 'a request head (and a TLS handshake) must arrive within this', '20s')
    .option('--body-timeout <duration>', 'a JSON request body must arrive whole within this', '30s')
    .option('--upload-stall-timeout <duration>', 'an upload that sends no byte for this long is cut (the client resumes it)', '60s')
    .option('--image-test-timeout <duration>', 'the console\'s image test: how long to wait for the guest to print "ready" (or a login prompt) on its serial line before the screenshot is taken anyway', '2m')
    .option('--image-test-hold <duration>', 'the console\'s image test: how long the VM stays up after its screenshot, for the live view (the administrator may stop it sooner)', '5m')
    .option('--image-test-on-upload', 'test every version an upload completes (its pack and index both published) as the console\'s image test does; its keys must be published first')
    .option('--json', 'print {url, root, adminTokenFile, database} once listening, then one JSON object per request')
    .addHelpText('after', `
What it serves:
  GET/HEAD /images/<NAME>_<N>.ckm and /images/<NAME>_<N>.ckm.index from <root>/images, with
  Range (single and multiple: multipart/byteranges), ETag, If-Range and Last-Modified, so
  clients fetch only the blocks they lack. Nothing else is served: no listing, no dotfiles, no
  other names, no symlinks, nothing outside <root>/images, no unfinished upload.
  /upload/ takes tus uploads (medv image upload) with "Authorization: Bearer <admin token>".
  A completed upload is checked (its name, its header, an index's packs already published) and
  then published atomically; a published file is never overwritten (the same bytes again: ok).

Users and policies (/api/, JSON): POST /api/login returns an expiring token; GET /api/policies
lists the policies a token's user is entitled to; /api/admin/users and /api/admin/policies take
the admin token (medv admin user add, medv admin policy publish). Image keys published with
medv admin image-keys publish are kept wrapped under the server key and released, sealed to the
client's key, to users a policy entitles (POST /api/workspaces/grant). Passwords are stored as
Argon2id hashes and tokens as BLAKE2b hashes, never in clear. Credentials are refused over plain
HTTP from other hosts (403) unless --tls-cert/--tls-key (HTTPS), a --trust-proxy proxy that
says it took HTTPS, or --allow-plain-http. Every route: docs/api.md.

Failed logins: --max-failed-logins failures of a name from one address refuse that name from that
address; --max-failed-logins-per-address failures from one address refuse that address; failures
of a name from everywhere only slow it down (never refuse the right password from elsewhere).
Behind a reverse proxy, name it with --trust-proxy: its X-Forwarded-For then names the client.

Bounds: a slow peer is cut at --header-timeout / --body-timeout / --upload-stall-timeout (408);
one address holds at most --max-connections-per-address connections; at --max-connections the
busiest address's slowest connection makes room. Folders and files it creates get their own
modes whatever the umask; a root others may write into is refused (EUNSAFE, exit 4).

It logs one line per request on stdout (client address, method, path, status, bytes sent, bytes
received) and stops cleanly on SIGTERM or SIGINT (requests in flight get 5 seconds).

Examples:
  medv serve --root /srv/medv --host 0.0.0.0 --port 8080
  medv image upload PackedImages/win10_2.ckm PackedImages/win10_2.ckm.index --server http://console:8080 --token-file /srv/medv/admin.token
  MEDV_DB=postgres://medv:secret@db.example/medv medv serve --root /srv/medv --server-key /etc/medv/server.key   # one of several instances
  medv serve --root /srv/medv --host 0.0.0.0 --port 8443 --tls-cert /etc/medv/server.pem --tls-key /etc/medv/server.key
  medv serve --root /srv/medv --port 8080 --trust-proxy 127.0.0.1 --trust-proxy 10.0.0.0/8   # behind nginx doing TLS
  medv serve --root /tmp/repo --port 0 --json     # tests: the first line says where it listens`)
    .action(async (o: Opts) => {
      const port = parseCount(String(o.port), '--port', 65535);
      const maxUploadSize = parseSize(String(o.maxUploadSize), '--max-upload-size');
      const maxActiveUploads = Math.max(1, parseCount(String(o.maxUploads), '--max-uploads', 1024));
      const json = !!o.json;
      const tokenLifetimeMs = parseDuration(String(o.tokenLifetime), '--token-lifetime');
      const perNameAddress = Math.max(1, parseCount(String(o.maxFailedLogins), '--max-failed-logins', 1000));
      const perAddress = Math.max(1, parseCount(String(o.maxFailedLoginsPerAddress), '--max-failed-logins-per-address', 100000));
      const perName = Math.max(1, parseCount(String(o.maxFailedLoginsPerName), '--max-failed-logins-per-name', 100000));
      const audit = {
        retentionMs: parseDuration(String(o.auditRetention), '--audit-retention'),
        maxRows: Math.max(10, parseCount(String(o.auditMaxRows), '--audit-max-rows', 100_000_000)),
      };
      const keys = {
        maxClientsPerUser: Math.max(1, parseCount(String(o.maxClientsPerUser), '--max-clients-per-user', 10000)),
        maxReportsPerUser: Math.max(1, parseCount(String(o.maxReportsPerUser), '--max-reports-per-user', 1_000_000)),
      };
      const limits = {
        maxConnections: Math.max(1, parseCount(String(o.maxConnections), '--max-connections', 100000)),
        maxConnectionsPerAddress: Math.max(1, parseCount(String(o.maxConnectionsPerAddress), '--max-connections-per-address', 100000)),
        headersTimeoutMs: parseDuration(String(o.headerTimeout), '--header-timeout'),
        bodyTimeoutMs: parseDuration(String(o.bodyTimeout), '--body-timeout'),
        stallTimeoutMs: parseDuration(String(o.uploadStallTimeout), '--upload-stall-timeout'),
      };
      const { serveRepository } = await import('../server/index.js');
      const s = await serveRepository({
        root: String(o.root),
        host: String(o.host),
        port,
        adminTokenFile: o.adminTokenFile as string | undefined,
        serverKeyFile: o.serverKey as string | undefined,
        maxUploadSize,
        maxActiveUploads,
        db: (o.db as string | undefined) ?? process.env.MEDV_DB,
        allowPlainHttp: !!o.allowPlainHttp,
        tlsCert: o.tlsCert as string | undefined,
        tlsKey: o.tlsKey as string | undefined,
        accounts: { tokenLifetimeMs, perNameAddress, perAddress, perName },
        audit,
        keys,
        limits,
        trustProxy: o.trustProxy as string[],
        imageTests: { timeoutMs: parseDuration(String(o.imageTestTimeout), '--image-test-timeout'), holdMs: parseDuration(String(o.imageTestHold), '--image-test-hold') },
        imageTestOnUpload: o.imageTestOnUpload === true,
        onLog(e) {
          if (json) process.stdout.write(`${JSON.stringify(e)}\n`);
          else process.stdout.write(`${e.time} ${e.remote} ${e.method} ${e.path} ${e.status} ${e.bytes}${e.received !== undefined ? ` +${e.received}` : ''}\n`);
        },
      });
      if (json) process.stdout.write(`${JSON.stringify({ url: s.url, root: s.root, adminTokenFile: s.adminTokenFile, database: s.database })}\n`);
      else {
        process.stdout.write(`medv serve: ${s.url}/images/ serves ${s.root}/images\n`);
        process.stdout.write(`medv serve: admin token ${s.tokenCreated ? 'generated in' : 'read from'} ${s.adminTokenFile}\n`);
        process.stdout.write(`medv serve: users and policies in ${s.database}\n`);
      }
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          s.close().then(resolve, resolve);
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      if (!json) process.stdout.write('medv serve: stopped\n');
    });
}
