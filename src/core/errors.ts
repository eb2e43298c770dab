/**
 * Typed errors with stable codes. Every error medv raises on purpose is a MedvError;
 * the edges (CLI exit status, NBD errno, HTTP status) map codes in one table each.
 */
export type ErrorCode =
  // generic / argument
  | 'EINVAL_ARG'          // bad argument from a caller (size, option, path)
  | 'ENOENT'              // a named file does not exist
  | 'EEXIST'              // refusing to overwrite an existing file
  | 'EIO'                 // an underlying read/write failed
  | 'EUNSUPPORTED'        // a valid but unsupported feature
  // block layer
  | 'EREADONLY'           // write to a read-only device
  | 'ERANGE'              // request outside the device
  | 'EALIGN'              // request not aligned to the device's minimum block size
  | 'ECLOSED'             // device already closed
  | 'ENOSPACE'            // device cannot grow further
  | 'EBUSY'               // the file is locked by another open (another process, or this one): data.holders names them
  // formats (hostile input)
  | 'EFORMAT'             // structurally invalid (bad magic, bad field)
  | 'ECHECKSUM'           // checksum mismatch
  | 'ETRUNCATED'          // file shorter than its structures say
  | 'EVERSION'            // unknown format version
  | 'EPARENT'             // parent missing, wrong unique id, or parent chain loop
  | 'ECORRUPT'            // inconsistent metadata (overlapping blocks, BAT past EOF...)
  // crypto
  | 'EBADKEY'             // wrong key or passphrase (detected before data is read)
  | 'ENOKEY'              // no key/passphrase supplied where one is needed
  | 'ECRYPTO'             // authentication failure of wrapped data
  // nbd
  | 'EPROTO'              // protocol violation by a peer
  // hypervisor
  | 'EHYPERVISOR'         // QEMU failed to start, or the VM stopped in an error state (e.g. KVM internal error)
  | 'ETIMEOUT'            // a wait for the guest or QEMU ran out of time
  | 'EINTERNAL'
  | 'EAUTH'               // an authenticated structure (EVHD header MAC) does not verify under the key
  | 'EINSECURE'           // key material readable or writable by group/other (host key file)
  // packed images
  | 'ESIGNATURE'          // an image index whose signature does not verify, or whose signer is not trusted
  | 'EBADBLOCK'           // a packed block that does not authenticate, decompress, or match its id
  // repository server and image transfer
  | 'EDENIED'             // the server refused our credentials (HTTP 401)
  | 'EFORBIDDEN'          // valid credentials, but this account may not do that (HTTP 403)
  | 'EMETHOD'             // an HTTP method the resource does not take (405)
  | 'EPRECONDITION'       // an HTTP precondition (If-Match, If-Unmodified-Since) does not hold (412)
  | 'ENETWORK'            // a repository could not be reached, or kept failing, after retries
  | 'EHTTP'               // an HTTP peer answered an error or unexpected status (404, 5xx, ...)
  | 'EBADREPLY'           // a repository's reply breaks HTTP range rules (wrong Content-Range, bad multipart)
  | 'ECHANGED'            // a repository file changed during the transfer (ETag differs)
  // saved state
  | 'ESAVEDSTATE'         // a VHD whose saved-state flag is set (its VM is suspended): only its resume may write it
  // accounts and policies
  | 'EPOLICY'             // a policy document that fails its JSON Schema (data.path: the bad field)
  | 'ERATELIMIT'          // too many failed logins: wait (data.retryAfter seconds)
  | 'ETOOLARGE'           // a request body or field larger than its bound
  // workspaces
  | 'ENOLOGIN'            // no saved login for the client (or it expired): medv login
  | 'EOFFLINE'            // the server cannot be reached and the policy's offline allowance is used up (or was never granted)
  | 'EEXPIRED'            // the workspace's policy expired
  // client repositories
  | 'EUNSAFE'             // a repository folder that is a symlink, another user's, or writable by group/others
  | 'EENGINE'             // an image that needs a newer medv engine (GlobalImageData.xml) or a newer layout
  // orders of the administrator (the console's lock and wipe), reaching a client at its next contact
  | 'ELOCKED'             // the workspace, client or user is locked: it does not start until unlocked (data.reason)
  | 'EWIPED';             // the workspace's data on this client must be wiped, and was (data.reason)

export interface MedvErrorData {
  file?: string;
  offset?: number | bigint;
  [key: string]: unknown;
}

export class MedvError extends Error {
  readonly code: ErrorCode;
  readonly data: MedvErrorData;

  constructor(code: ErrorCode, message: string, data: MedvErrorData = {}, options?: { cause?: unknown }) {
    super(formatMessage(message, data), options);
    this.name = 'MedvError';
    this.code = code;
    this.data = data;
  }

  toJSON(): { code: ErrorCode; message: string; data: Record<string, unknown> } {
    const data: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(this.data)) data[k] = typeof v === 'bigint' ? v.toString() : v;
    return { code: this.code, message: this.message, data };
  }
}

function formatMessage(message: string, data: MedvErrorData): string {
  const where: string[] = [];
  if (data.file !== undefined) where.push(String(data.file));
  if (data.offset !== undefined) where.push(`offset ${data.offset}`);
  return where.length ? `${message} (${where.join(', ')})` : message;
}

export function isMedvError(e: unknown, code?: ErrorCode): e is MedvError {
  return e instanceof MedvError && (code === undefined || e.code === code);
}

/** Wrap a Node fs error into a MedvError, keeping typed errors as they are. */
export function fromSystemError(e: unknown, file?: string): MedvError {
  if (e instanceof MedvError) return e;
  const err = e as NodeJS.ErrnoException;
  const msg = err && err.message ? err.message : String(e);
  switch (err?.code) {
    case 'ENOENT': return new MedvError('ENOENT', `no such file: ${file ?? err.path ?? ''}`.trim(), { file }, { cause: e });
    case 'EEXIST': return new MedvError('EEXIST', `file exists: ${file ?? err.path ?? ''}`.trim(), { file }, { cause: e });
    case 'ENOSPC': return new MedvError('ENOSPACE', 'no space left on device', { file }, { cause: e });
    case 'EISDIR': return new MedvError('EINVAL_ARG', `is a directory, not a disk: ${file ?? err.path ?? ''}`.trim(), { file }, { cause: e });
    case 'EACCES': case 'EPERM': case 'EROFS':
      return new MedvError('EREADONLY', `permission denied: ${msg}`, { file }, { cause: e });
    default: return new MedvError('EIO', msg, { file }, { cause: e });
  }
}
