/**
 * The fixed-newstyle handshake of one connection: greeting, client flags, then options until the
 * client enters transmission (GO or EXPORT_NAME) or leaves.
 *
 * Options: EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT and
 * SET_META_CONTEXT (the one context `base:allocation`); every other option (STARTTLS, …) is
 * answered NBD_REP_ERR_UNSUP, which QEMU 7.2 needs to go on. Option data is bounded
 * (MAX_OPTION_DATA); the connection bounds the time and the number of handshakes (see connection.ts).
 */
import type { BlockDevice } from '../block/device.js';
import type { ByteQueue } from './bytequeue.js';
import { exportInfo, type ExportInfo, type NbdServerOptions } from './options.js';
import * as P from './protocol.js';

/** Largest option payload buffered during the handshake (names, info requests, context queries). */
export const MAX_OPTION_DATA = 1 << 20;
/** The id this server gives base:allocation when a client selects it. */
export const ALLOCATION_CONTEXT_ID = 1;

/** Where the client ended up: transmission with these parameters. */
export interface Negotiated {
  info: ExportInfo;
  structured: boolean;
  /** ALLOCATION_CONTEXT_ID when the client selected base:allocation, else 0. */
  allocationContext: number;
}

/** What the handshake needs from its connection. */
export interface HandshakeIo {
  write(b: Buffer): void;
  /** End the connection at once (hostile or broken input). */
  disconnect(reason: string): void;
  /** End the connection politely (after NBD_OPT_ABORT was acknowledged). */
  end(): void;
}

type State = 'flags' | 'optHeader' | 'optData' | 'done';

export class Handshake {
  private state: State = 'flags';
  private noZeroes = false;
  private optType = 0;
  private optLen = 0;
  private structured = false;
  private allocationContext = 0;

  constructor(
    private readonly io: HandshakeIo,
    private readonly device: BlockDevice,
    private readonly opts: NbdServerOptions,
    private readonly sizes: P.BlockSizes,
  ) {
    io.write(P.encodeGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES));
  }

  /** Consume what `q` holds; returns the negotiated parameters once the client enters transmission. */
  pump(q: ByteQueue): Negotiated | undefined {
    for (;;) {
      switch (this.state) {
        case 'flags': {
          if (q.length < P.CLIENT_FLAGS_SIZE) return undefined;
          const b = q.peek(P.CLIENT_FLAGS_SIZE);
          const flags = b.readUInt32BE(q.peekOffset);
          q.consume(P.CLIENT_FLAGS_SIZE);
          if ((flags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
            return this.stop(`client sent unknown flags 0x${flags.toString(16)}`);
          }
          this.noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
          this.state = 'optHeader';
          break;
        }
        case 'optHeader': {
          if (q.length < P.OPTION_HEADER_SIZE) return undefined;
          let h: P.OptionHeader;
          try {
            h = P.decodeOptionHeader(q.peek(P.OPTION_HEADER_SIZE), q.peekOffset);
          } catch (e) {
            return this.stop((e as Error).message);
          }
          q.consume(P.OPTION_HEADER_SIZE);
          if (h.length > MAX_OPTION_DATA) return this.stop(`option ${P.optionName(h.option)} with ${h.length} bytes of data`);
          this.optType = h.option;
          this.optLen = h.length;
          this.state = 'optData';
          break;
        }
        case 'optData': {
          if (q.length < this.optLen) return undefined;
          const data = q.take(this.optLen);
          this.state = 'optHeader';
          const done = this.option(this.optType, data);
          if (done) return done;
          break;
        }
        case 'done':
          return undefined;
      }
    }
  }

  private stop(reason: string): undefined {
    this.state = 'done';
    this.io.disconnect(reason);
    return undefined;
  }

  private nameAccepted(name: string): boolean {
    const want = this.opts.exportName ?? '';
    return want === '' || name === '' || name === want;
  }

  private reply(option: number, type: number, data?: Buffer): void {
    this.io.write(P.encodeOptionReply(option, type, data));
  }

  private error(option: number, type: number, message: string): undefined {
    this.reply(option, type, Buffer.from(message, 'utf8'));
    return undefined;
  }

  private negotiated(): Negotiated {
    return {
      info: exportInfo(this.device, this.opts, this.sizes, this.structured),
      structured: this.structured,
      allocationContext: this.allocationContext,
    };
  }

  private option(option: number, data: Buffer): Negotiated | undefined {
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        let name: string;
        try {
          name = P.decodeString(data);
        } catch (e) {
          return this.stop(`EXPORT_NAME: ${(e as Error).message}`);
        }
        // This option cannot fail with a reply: an unknown export ends the session (proto.md).
        if (!this.nameAccepted(name)) return this.stop(`client asked for unknown export '${name}'`);
        const n = this.negotiated();
        this.io.write(P.encodeExportNameReply(n.info.size, n.info.flags, this.noZeroes));
        this.state = 'done';
        return n;
      }
      case P.NBD_OPT_ABORT:
        this.reply(option, P.NBD_REP_ACK);
        this.state = 'done';
        this.io.end();
        return undefined;
      case P.NBD_OPT_LIST:
        if (data.length !== 0) return this.error(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
        this.reply(option, P.NBD_REP_SERVER, P.encodeRepServer(this.opts.exportName ?? '', this.opts.description ?? ''));
        this.reply(option, P.NBD_REP_ACK);
        return undefined;
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.error(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        this.structured = true;
        this.reply(option, P.NBD_REP_ACK);
        return undefined;
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        this.metaContext(option, data);
        return undefined;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        let req: P.InfoRequest;
        try {
          req = P.decodeInfoRequest(data);
        } catch (e) {
          return this.error(option, P.NBD_REP_ERR_INVALID, (e as Error).message);
        }
        if (!this.nameAccepted(req.name)) return this.error(option, P.NBD_REP_ERR_UNKNOWN, `no export named '${req.name}'`);
        const n = this.negotiated();
        const info = n.info;
        this.reply(option, P.NBD_REP_INFO, P.encodeInfoExport(info.size, info.flags));
        if (req.requests.includes(P.NBD_INFO_NAME)) {
          this.reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_NAME, this.opts.exportName || req.name));
        }
        if (req.requests.includes(P.NBD_INFO_DESCRIPTION) && this.opts.description) {
          this.reply(option, P.NBD_REP_INFO, P.encodeInfoString(P.NBD_INFO_DESCRIPTION, this.opts.description));
        }
        // Block sizes are sent whether asked or not (the protocol allows it; QEMU and libnbd honour them).
        this.reply(option, P.NBD_REP_INFO, P.encodeInfoBlockSize(info.sizes));
        this.reply(option, P.NBD_REP_ACK);
        if (option !== P.NBD_OPT_GO) return undefined;
        this.state = 'done';
        return n;
      }
      default:
        // STARTTLS and anything unknown.
        this.error(option, P.NBD_REP_ERR_UNSUP, `${P.optionName(option)} is not supported`);
        return undefined;
    }
  }

  /**
   * LIST: no query lists every context; `base:` or `base:allocation` lists base:allocation (id 0, as
   * the spec asks). SET: selects base:allocation when a query names it exactly, replacing any earlier
   * selection; other queries select nothing. Both need structured replies first.
   */
  private metaContext(option: number, data: Buffer): void {
    if (!this.structured) {
      this.error(option, P.NBD_REP_ERR_INVALID, `${P.optionName(option)} needs NBD_OPT_STRUCTURED_REPLY first`);
      return;
    }
    let req: P.MetaContextRequest;
    try {
      req = P.decodeMetaContextRequest(data);
    } catch (e) {
      this.error(option, P.NBD_REP_ERR_INVALID, (e as Error).message);
      return;
    }
    if (!this.nameAccepted(req.name)) {
      this.error(option, P.NBD_REP_ERR_UNKNOWN, `no export named '${req.name}'`);
      return;
    }
    const set = option === P.NBD_OPT_SET_META_CONTEXT;
    const selected = set
      ? req.queries.includes(P.BASE_ALLOCATION)
      : req.queries.length === 0 || req.queries.some((q) => q === 'base:' || q === P.BASE_ALLOCATION);
    if (set) this.allocationContext = selected ? ALLOCATION_CONTEXT_ID : 0;
    if (selected) this.reply(option, P.NBD_REP_META_CONTEXT, P.encodeRepMetaContext(set ? ALLOCATION_CONTEXT_ID : 0, P.BASE_ALLOCATION));
    this.reply(option, P.NBD_REP_ACK);
  }
}
