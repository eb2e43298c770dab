// medv native addon: only what Node cannot do, or cannot do fast (DESIGN.md, "native/").
//
//   xtsCrypt(key, input, output, firstUnit, unitSize, encrypt)  batch AES-256-XTS (libgcrypt), one cipher handle
//   xtsCryptAsync(same arguments)                                the same on the libuv pool: a promise
//   preadNoWait(fd, buf, offset, position)                       page-cache hits only (preadv2 RWF_NOWAIT), no thread-pool hop
//   preadXtsAsync(fd, buf, position, key, firstUnit, unitSize)  pread, then XTS decrypt in place, one libuv pool job: a promise
//   mapFile(fd, length), unmapFile(map)                          read-only shared mapping of a file, freed once unused
//   xtsFromMapAsync(map, position, buf, key, firstUnit, unitSize) XTS decrypt from the mapping into buf, libuv pool; SIGBUS -> EIO
//   fallocate(fd, mode, offset, length)                          punch a hole (0) or zero a range (1), on the libuv pool
//   kvmProbe()                                                   open /dev/kvm, KVM_GET_API_VERSION == 12
//   flock(fd, exclusive)                                         flock(2) LOCK_EX|LOCK_SH with LOCK_NB: true, or false when held
//   seekData(fd, position, max)                                  data segments from position on (lseek SEEK_DATA / SEEK_HOLE)
//
// AES-XTS comes from libgcrypt (linked: -lgcrypt, Debian's libgcrypt20-dev), which has VAES code
// for it; Node's OpenSSL 3.0 does not. The typed boundary (argument checks that raise MedvError) lives in
// src/native.ts; the checks here only keep hostile arguments from touching memory out of bounds.
// Error objects carry `code` (e.g. "ENOENT") and `errno` like Node's fs errors, and never key bytes.

#include <napi.h>
#include <gcrypt.h>

#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

constexpr unsigned long kKvmGetApiVersion = 0xAE00;  // _IO(KVMIO=0xAE, 0x00)
constexpr int kKvmApiVersion = 12;
constexpr size_t kXtsKeyBytes = 64;
constexpr double kMaxSafeInteger = 9007199254740991.0;
// XTS (IEEE 1619) allows at most 2^20 blocks of 16 bytes per data unit; libgcrypt refuses more.
constexpr uint32_t kMaxUnitSize = 16u * (1u << 20);

const char* ErrnoCode(int err) {
  switch (err) {
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ENOSPC: return "ENOSPC";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EFBIG: return "EFBIG";
    case EISDIR: return "EISDIR";
    case ENXIO: return "ENXIO";
    case ENODEV: return "ENODEV";
    case EAGAIN: return "EAGAIN";
    case EDQUOT: return "EDQUOT";
    case EOVERFLOW: return "EOVERFLOW";
    case ENOLCK: return "ENOLCK";
    default: return "EIO";
  }
}

Napi::Error SysError(Napi::Env env, const char* syscall, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + ErrnoCode(err) + " (" + strerror(err) + ")");
  e.Set("code", Napi::String::New(env, ErrnoCode(err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

bool ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return false;
}

bool ThrowRange(Napi::Env env, const char* msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
  return false;
}

// A Uint8Array (Buffer) argument: pointer and length.
bool GetBytes(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len) {
  if (info.Length() <= i || !info[i].IsTypedArray()) return ThrowType(info.Env(), "expected a Buffer");
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) return ThrowType(info.Env(), "expected a Buffer");
  Napi::Uint8Array u8 = ta.As<Napi::Uint8Array>();
  *data = u8.Data();
  *len = u8.ByteLength();
  return true;
}

// A non-negative safe integer argument.
bool GetIndex(const Napi::CallbackInfo& info, size_t i, double max, uint64_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) return ThrowType(info.Env(), "expected a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d < 0 || d > max || std::floor(d) != d) return ThrowRange(info.Env(), "integer out of range");
  *out = static_cast<uint64_t>(d);
  return true;
}

bool GetFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  uint64_t v;
  if (!GetIndex(info, i, 2147483647.0, &v)) return false;
  *fd = static_cast<int>(v);
  return true;
}

// ---------------------------------------------------------------------------------------------
// AES-256-XTS over whole units; unit i uses tweak (firstUnit + i) as a 16-byte little-endian
// number (LUKS "plain64"). input may be the same memory as output (in-place).
struct XtsJob {
  uint8_t* key = nullptr;
  uint8_t* in = nullptr;
  uint8_t* out = nullptr;
  uint64_t firstUnit = 0;
  uint64_t unitSize = 0;
  uint64_t units = 0;
  bool encrypt = false;
};

// Checks the arguments (key, input, output, firstUnit, unitSize, encrypt); false after throwing.
bool ParseXts(const Napi::CallbackInfo& info, XtsJob* job) {
  Napi::Env env = info.Env();
  size_t keyLen, inLen, outLen;
  if (!GetBytes(info, 0, &job->key, &keyLen) || !GetBytes(info, 1, &job->in, &inLen) || !GetBytes(info, 2, &job->out, &outLen) ||
      !GetIndex(info, 3, kMaxSafeInteger, &job->firstUnit) || !GetIndex(info, 4, kMaxUnitSize, &job->unitSize)) {
    return false;
  }
  if (info.Length() < 6 || !info[5].IsBoolean()) { ThrowType(env, "encrypt must be a boolean"); return false; }
  job->encrypt = info[5].As<Napi::Boolean>().Value();
  const uint64_t unitSize = job->unitSize;
  if (keyLen != kXtsKeyBytes) { ThrowRange(env, "key must be 64 bytes"); return false; }
  if (unitSize < 16 || unitSize % 16 != 0) { ThrowRange(env, "unit size must be a multiple of 16, at least 16"); return false; }
  if (inLen % unitSize != 0) { ThrowRange(env, "input length must be a multiple of the unit size"); return false; }
  if (outLen < inLen) { ThrowRange(env, "output is shorter than input"); return false; }
  if (job->in != job->out && job->in < job->out + inLen && job->out < job->in + inLen) { ThrowRange(env, "input and output overlap partially"); return false; }
  job->units = inLen / unitSize;
  if (job->units > 0 && job->firstUnit + job->units - 1 < job->firstUnit) { ThrowRange(env, "unit number overflow"); return false; }
  return true;
}

// The cipher work alone (no JS): safe on a pool thread. One libgcrypt handle per call: the key
// schedule is set once and only the tweak is set per unit. libgcrypt, not Node's OpenSSL: OpenSSL 3.0
// (Node 20's) runs XTS on AES-NI alone, libgcrypt 1.10 on VAES/AVX2 where the CPU has it
// (native/README.md has the measurements).
class XtsHandle {
 public:
  XtsHandle() {
    if (gcry_cipher_open(&h_, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_XTS, 0) != 0) h_ = nullptr;
  }
  ~XtsHandle() {
    if (h_ != nullptr) gcry_cipher_close(h_);  // wipes the key schedule
  }
  XtsHandle(const XtsHandle&) = delete;
  XtsHandle& operator=(const XtsHandle&) = delete;
  // The whole job; false when encrypting with a key of equal halves (IEEE 1619 forbids them;
  // Node's OpenSSL, the JS fallback, refuses them in the same case), or when libgcrypt refused.
  bool Run(const XtsJob& j) {
    uint8_t differ = 0;  // compared in constant time
    for (size_t b = 0; b < kXtsKeyBytes / 2; b++) differ |= j.key[b] ^ j.key[b + kXtsKeyBytes / 2];
    if ((j.encrypt && differ == 0) || h_ == nullptr || gcry_cipher_setkey(h_, j.key, kXtsKeyBytes) != 0) return false;
    uint8_t tweak[16];
    memset(tweak, 0, sizeof tweak);
    for (uint64_t i = 0; i < j.units; i++) {
      uint64_t t = j.firstUnit + i;
      for (int b = 0; b < 8; b++) tweak[b] = static_cast<uint8_t>(t >> (8 * b));
      uint8_t* out = j.out + i * j.unitSize;
      const uint8_t* in = j.in + i * j.unitSize;
      // in == out: libgcrypt's in-place form (NULL input).
      const void* src = in == out ? nullptr : in;
      size_t srcLen = in == out ? 0 : j.unitSize;
      if (gcry_cipher_setiv(h_, tweak, sizeof tweak) != 0) return false;
      gcry_error_t err = j.encrypt ? gcry_cipher_encrypt(h_, out, j.unitSize, src, srcLen)
                                   : gcry_cipher_decrypt(h_, out, j.unitSize, src, srcLen);
      if (err != 0) return false;
    }
    return true;
  }

 private:
  gcry_cipher_hd_t h_ = nullptr;
};

bool RunXts(const XtsJob& j) {
  XtsHandle h;
  return h.Run(j);
}

const char* const kXtsFailed = "AES-256-XTS failed (the key or the data was refused)";

Napi::Value XtsCrypt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  XtsJob job;
  if (!ParseXts(info, &job)) return env.Undefined();
  if (job.units > 0 && !RunXts(job)) Napi::Error::New(env, kXtsFailed).ThrowAsJavaScriptException();
  return env.Undefined();
}

// An XTS job on the libuv thread pool that settles a promise. The JS objects whose memory the job
// uses are held (persistent references) until it settles; the caller must not touch them meanwhile.
// Execute() sets ok_ (the cipher succeeded), or err_ and syscall_ for a system error.
class XtsPoolJob : public Napi::AsyncWorker {
 public:
  XtsPoolJob(const Napi::CallbackInfo& info, const XtsJob& job, std::initializer_list<size_t> held)
      : Napi::AsyncWorker(info.Env()), job_(job), deferred_(Napi::Promise::Deferred::New(info.Env())) {
    for (size_t i : held) refs_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
  }
  // Queue it; its promise.
  Napi::Value Start() {
    Napi::Promise p = deferred_.Promise();
    Queue();
    return p;
  }

 protected:
  // Runs on the event loop as the job settles, before the promise does.
  virtual void Settled() {}
  void OnOK() override {
    Settled();
    if (err_ != 0) deferred_.Reject(SysError(Env(), syscall_, err_).Value());
    else if (!ok_) deferred_.Reject(Napi::Error::New(Env(), kXtsFailed).Value());
    else deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    Settled();
    deferred_.Reject(e.Value());
  }

  XtsJob job_;
  bool ok_ = false;
  int err_ = 0;
  const char* syscall_ = "";

 private:
  std::vector<Napi::ObjectReference> refs_;
  Napi::Promise::Deferred deferred_;
};

// xtsCrypt on the pool, so a large batch runs on another core while the event loop serves sockets.
class XtsWorker : public XtsPoolJob {
 public:
  XtsWorker(const Napi::CallbackInfo& info, const XtsJob& job) : XtsPoolJob(info, job, {0, 1, 2}) {}

 protected:
  void Execute() override { ok_ = RunXts(job_); }
};

Napi::Value XtsCryptAsync(const Napi::CallbackInfo& info) {
  XtsJob job;
  if (!ParseXts(info, &job)) return info.Env().Undefined();
  return (new XtsWorker(info, job))->Start();
}

// A decryption into a buffer of bufLen bytes (job->out, key, firstUnit and unitSize read): checks the
// rest and fills in units; false after throwing.
bool CheckDecryptJob(Napi::Env env, XtsJob* job, size_t bufLen, size_t keyLen) {
  if (keyLen != kXtsKeyBytes) return ThrowRange(env, "key must be 64 bytes");
  if (job->unitSize < 16 || job->unitSize % 16 != 0) return ThrowRange(env, "unit size must be a multiple of 16, at least 16");
  if (bufLen % job->unitSize != 0) return ThrowRange(env, "buffer length must be a multiple of the unit size");
  job->encrypt = false;
  job->units = bufLen / job->unitSize;
  if (job->units > 0 && job->firstUnit + job->units - 1 < job->firstUnit) return ThrowRange(env, "unit number overflow");
  return true;
}

// ---------------------------------------------------------------------------------------------
// A read and its AES-256-XTS decryption in one job on the libuv thread pool:
// (fd, buf, position, key, firstUnit, unitSize) reads buf.length bytes at `position` (zeros past end
// of file), then decrypts them in place as xtsCrypt does. The event loop does neither the copy out
// of the page cache nor the cipher. Resolves undefined; rejects with the read's system error.
class PreadXtsWorker : public XtsPoolJob {
 public:
  PreadXtsWorker(const Napi::CallbackInfo& info, int fd, uint64_t position, const XtsJob& job)
      : XtsPoolJob(info, job, {1, 3}), fd_(fd), position_(position) {}

 protected:
  void Execute() override {
    const size_t len = job_.units * job_.unitSize;
    size_t done = 0;
    while (done < len) {
      ssize_t n = pread(fd_, job_.out + done, len - done, static_cast<off_t>(position_ + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { err_ = errno; syscall_ = "pread"; return; }
      if (n == 0) { memset(job_.out + done, 0, len - done); break; }
      done += static_cast<size_t>(n);
    }
    ok_ = RunXts(job_);
  }

 private:
  int fd_;
  uint64_t position_;
};

Napi::Value PreadXtsAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t position;
  XtsJob job;
  size_t bufLen, keyLen;
  if (!GetFd(info, 0, &fd) || !GetBytes(info, 1, &job.out, &bufLen) || !GetIndex(info, 2, kMaxSafeInteger, &position) ||
      !GetBytes(info, 3, &job.key, &keyLen) || !GetIndex(info, 4, kMaxSafeInteger, &job.firstUnit) ||
      !GetIndex(info, 5, kMaxUnitSize, &job.unitSize)) {
    return env.Undefined();
  }
  if (!CheckDecryptJob(env, &job, bufLen, keyLen)) return env.Undefined();
  if (position + bufLen > kMaxSafeInteger) return ThrowRange(env, "position out of range"), env.Undefined();
  job.in = job.out;
  return (new PreadXtsWorker(info, fd, position, job))->Start();
}

// ---------------------------------------------------------------------------------------------
// A read-only shared mapping of a file, decrypted from straight into the caller's buffer on the
// thread pool: the cipher reads the page cache itself, with no copy into our memory first.
//   mapFile(fd, length) -> map          mmap(PROT_READ, MAP_SHARED) of [0, length)
//   unmapFile(map)                      no new reads; munmap once the reads in flight are done
//   xtsFromMapAsync(map, position, buf, key, firstUnit, unitSize) -> promise
// A page the kernel cannot give (the file was truncated under the mapping, or an I/O error) raises
// SIGBUS in the reading thread. The reads run under a guard: our handler jumps back out of the
// cipher and the read rejects with EIO instead of killing the process. SIGBUS anywhere else goes to
// the handler that was there before (by default: the process dies, as without us).
// The map's users are counted on the event loop (queue and completion both run there).

struct FileMap {
  uint8_t* base = nullptr;
  size_t length = 0;
  int users = 0;
  bool unmapped = false;
};

void ReleaseMapping(FileMap* m) {
  if (m->base != nullptr) {
    munmap(m->base, m->length);
    m->base = nullptr;
  }
}

thread_local sigjmp_buf* tSigbusGuard = nullptr;
struct sigaction gPreviousSigbus;
bool gSigbusInstalled = false;

void OnSigbus(int sig, siginfo_t* info, void* uctx) {
  sigjmp_buf* guard = tSigbusGuard;
  if (guard != nullptr) siglongjmp(*guard, 1);
  // Not one of our guarded reads: whoever handled SIGBUS before us, or the default action.
  if (gPreviousSigbus.sa_flags & SA_SIGINFO) {
    if (gPreviousSigbus.sa_sigaction != nullptr) { gPreviousSigbus.sa_sigaction(sig, info, uctx); return; }
  } else if (gPreviousSigbus.sa_handler != SIG_DFL && gPreviousSigbus.sa_handler != SIG_IGN && gPreviousSigbus.sa_handler != nullptr) {
    gPreviousSigbus.sa_handler(sig);
    return;
  }
  sigaction(SIGBUS, &gPreviousSigbus, nullptr);  // the faulting access runs again and meets it
}

bool InstallSigbusGuard() {
  if (gSigbusInstalled) return true;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &gPreviousSigbus) != 0) return false;
  gSigbusInstalled = true;
  return true;
}

FileMap* GetMap(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsExternal()) { ThrowType(info.Env(), "expected a file map"); return nullptr; }
  return info[i].As<Napi::External<FileMap>>().Data();
}

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t length;
  if (!GetFd(info, 0, &fd) || !GetIndex(info, 1, kMaxSafeInteger, &length)) return env.Undefined();
  if (length == 0) return ThrowRange(env, "cannot map an empty range"), env.Undefined();
  if (!InstallSigbusGuard()) return SysError(env, "sigaction", errno).ThrowAsJavaScriptException(), env.Undefined();
  void* base = mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return SysError(env, "mmap", errno).ThrowAsJavaScriptException(), env.Undefined();
  auto* m = new FileMap();
  m->base = static_cast<uint8_t*>(base);
  m->length = length;
  // Collected only when nothing refers to it: no read holds it (each holds a reference).
  return Napi::External<FileMap>::New(env, m, [](Napi::Env, FileMap* fm) { ReleaseMapping(fm); delete fm; });
}

Napi::Value UnmapFile(const Napi::CallbackInfo& info) {
  FileMap* m = GetMap(info, 0);
  if (m == nullptr) return info.Env().Undefined();
  m->unmapped = true;
  if (m->users == 0) ReleaseMapping(m);
  return info.Env().Undefined();
}

class MapXtsWorker : public XtsPoolJob {
 public:
  MapXtsWorker(const Napi::CallbackInfo& info, FileMap* m, uint64_t position, const XtsJob& job)
      : XtsPoolJob(info, job, {0, 2, 3}), map_(m) {
    job_.in = m->base + position;
    m->users++;
  }

 protected:
  void Execute() override {
    XtsHandle cipher;  // freed (and wiped) on return, also after a jump out of the cipher
    sigjmp_buf guard;
    if (sigsetjmp(guard, 1) == 0) {
      tSigbusGuard = &guard;
      ok_ = cipher.Run(job_);
      tSigbusGuard = nullptr;
    } else {
      tSigbusGuard = nullptr;
      err_ = EIO;  // the page could not be read
      syscall_ = "mmap read";
    }
  }
  void Settled() override {
    if (--map_->users == 0 && map_->unmapped) ReleaseMapping(map_);
  }

 private:
  FileMap* map_;
};

Napi::Value XtsFromMapAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  FileMap* m = GetMap(info, 0);
  uint64_t position;
  XtsJob job;
  size_t bufLen, keyLen;
  if (m == nullptr || !GetIndex(info, 1, kMaxSafeInteger, &position) || !GetBytes(info, 2, &job.out, &bufLen) ||
      !GetBytes(info, 3, &job.key, &keyLen) || !GetIndex(info, 4, kMaxSafeInteger, &job.firstUnit) ||
      !GetIndex(info, 5, kMaxUnitSize, &job.unitSize)) {
    return env.Undefined();
  }
  if (m->unmapped || m->base == nullptr) return ThrowRange(env, "the file map was unmapped"), env.Undefined();
  if (position > m->length || bufLen > m->length - position) return ThrowRange(env, "range is outside the file map"), env.Undefined();
  if (!CheckDecryptJob(env, &job, bufLen, keyLen)) return env.Undefined();
  return (new MapXtsWorker(info, m, position, job))->Start();
}

// ---------------------------------------------------------------------------------------------
// Page-cache reads without a thread-pool hop.

struct IoArgs {
  int fd = -1;
  uint8_t* data = nullptr;
  size_t len = 0;
  uint64_t position = 0;
};

// (fd, buf, offset, position): transfers buf[offset, buf.length) at file position `position`.
bool GetIoArgs(const Napi::CallbackInfo& info, IoArgs* a) {
  size_t bufLen;
  uint64_t offset;
  if (!GetFd(info, 0, &a->fd) || !GetBytes(info, 1, &a->data, &bufLen) ||
      !GetIndex(info, 2, kMaxSafeInteger, &offset) || !GetIndex(info, 3, kMaxSafeInteger, &a->position)) {
    return false;
  }
  if (offset > bufLen) return ThrowRange(info.Env(), "offset is past the end of the buffer");
  a->data += offset;
  a->len = bufLen - offset;
  return true;
}

// Read from the page cache only (preadv2 RWF_NOWAIT): returns the bytes that were cached (possibly
// short), or -1 when the first byte would need disk I/O or the kernel/file system cannot do NOWAIT.
// The caller finishes the read on the thread pool; a cache hit costs no thread-pool hop.
Napi::Value PreadNoWait(const Napi::CallbackInfo& info) {
  IoArgs a;
  if (!GetIoArgs(info, &a)) return info.Env().Undefined();
  size_t done = 0;
  while (done < a.len) {
    struct iovec iov = {a.data + done, a.len - done};
    ssize_t n = preadv2(a.fd, &iov, 1, static_cast<off_t>(a.position + done), RWF_NOWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) break;
      SysError(info.Env(), "preadv2", errno).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done == 0 && a.len > 0) return Napi::Number::New(info.Env(), -1);
  return Napi::Number::New(info.Env(), static_cast<double>(done));
}

// ---------------------------------------------------------------------------------------------
// fallocate(2) on the libuv thread pool (it can take milliseconds on a large range):
//   mode 0: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE  (deallocate; reads as zeros)
//   mode 1: FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE  (reads as zeros, stays allocated)
// Resolves true when done, false when the file system does not support the mode (EOPNOTSUPP):
// the caller then writes zeros itself.

class FallocateWorker : public Napi::AsyncWorker {
 public:
  FallocateWorker(Napi::Env env, int fd, int mode, uint64_t offset, uint64_t length)
      : Napi::AsyncWorker(env), fd_(fd), mode_(mode), offset_(offset), length_(length),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    int flags = (mode_ == 0 ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) | FALLOC_FL_KEEP_SIZE;
    for (;;) {
      if (::fallocate(fd_, flags, static_cast<off_t>(offset_), static_cast<off_t>(length_)) == 0) { err_ = 0; return; }
      if (errno != EINTR) { err_ = errno; return; }
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_ == 0) deferred_.Resolve(Napi::Boolean::New(env, true));
    else if (err_ == EOPNOTSUPP || err_ == ENOSYS) deferred_.Resolve(Napi::Boolean::New(env, false));
    else deferred_.Reject(SysError(env, "fallocate", err_).Value());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  int fd_;
  int mode_;
  uint64_t offset_;
  uint64_t length_;
  int err_ = 0;
  Napi::Promise::Deferred deferred_;
};

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  int fd;
  uint64_t mode, offset, length;
  if (!GetFd(info, 0, &fd) || !GetIndex(info, 1, 1, &mode) || !GetIndex(info, 2, kMaxSafeInteger, &offset) ||
      !GetIndex(info, 3, kMaxSafeInteger, &length)) {
    return info.Env().Undefined();
  }
  if (length == 0 || offset + length > kMaxSafeInteger) return ThrowRange(info.Env(), "fallocate range is empty or too large"), info.Env().Undefined();
  auto* w = new FallocateWorker(info.Env(), fd, static_cast<int>(mode), offset, length);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// ---------------------------------------------------------------------------------------------
Napi::Value KvmProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    r.Set("available", false);
    r.Set("reason", std::string("cannot open /dev/kvm: ") + ErrnoCode(err) + " (" + strerror(err) + ")");
    return r;
  }
  int v = ::ioctl(fd, kKvmGetApiVersion, 0);
  int err = errno;
  ::close(fd);
  if (v == kKvmApiVersion) {
    r.Set("available", true);
  } else {
    r.Set("available", false);
    r.Set("reason", v < 0 ? std::string("KVM_GET_API_VERSION failed: ") + strerror(err)
                          : "KVM API version " + std::to_string(v) + ", expected 12");
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// flock(2) on an open file, never waiting (LOCK_NB): returns true when the lock is taken, false
// when another open file description holds a conflicting one. The lock belongs to the open file
// description, so it holds against a second open in this process too, and dies with the last fd.
Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  if (info.Length() <= 1 || !info[1].IsBoolean()) { ThrowType(env, "expected a boolean"); return env.Undefined(); }
  const int op = (info[1].As<Napi::Boolean>().Value() ? LOCK_EX : LOCK_SH) | LOCK_NB;
  int r;
  do { r = ::flock(fd, op); } while (r != 0 && errno == EINTR);
  if (r == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  SysError(env, "flock", errno).ThrowAsJavaScriptException();
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// The data segments of a sparse file from `position` on, found with lseek(2) SEEK_DATA and
// SEEK_HOLE (what lies between them is a hole, which reads as zeros): (fd, position, end, max) ->
// a flat array [start0, end0, start1, end1, ...] of at most `max` segments clipped to [position,
// end). Stops at `end`, at the end of the file (ENXIO), or after `max` segments. A file system
// without holes reports its whole size as data. lseek moves the descriptor's file offset, which
// no caller uses (every read and write is positional). Errors throw with `code`.
Napi::Value SeekData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  uint64_t position, end, max;
  if (!GetFd(info, 0, &fd) || !GetIndex(info, 1, kMaxSafeInteger, &position) || !GetIndex(info, 2, kMaxSafeInteger, &end) ||
      !GetIndex(info, 3, 1 << 20, &max)) {
    return env.Undefined();
  }
  std::vector<double> out;
  uint64_t at = position;
  while (at < end && out.size() / 2 < max) {
    off_t data = lseek(fd, static_cast<off_t>(at), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data from here to the end of the file
      SysError(env, "lseek", errno).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (static_cast<uint64_t>(data) >= end) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      SysError(env, "lseek", errno).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint64_t stop = static_cast<uint64_t>(hole) < end ? static_cast<uint64_t>(hole) : end;
    if (stop <= static_cast<uint64_t>(data)) break;  // the file shrank under us
    out.push_back(static_cast<double>(data));
    out.push_back(static_cast<double>(stop));
    at = stop;
  }
  Napi::Array a = Napi::Array::New(env, out.size());
  for (size_t i = 0; i < out.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, out[i]));
  return a;
}

// ---------------------------------------------------------------------------------------------
// A READ reply sent from the page cache without copying it through our memory: `header` with
// send(2), then the file range with sendfile(2), which hands a unix socket references to the
// cached pages (the reader's recv is the only copy). Everything is non-blocking on the event loop:
//  - nothing is sent, and -1 returned, unless cachestat(2) says every page of the range is cached
//    (sendfile would otherwise wait for the disk) or where the kernel lacks cachestat;
//  - otherwise it returns the bytes sent of header + range, stopping early when the socket is full
//    (EAGAIN), at end of file, or on any error (the caller sends the rest its ordinary way, where a
//    socket or file error shows again). The socket must be non-blocking (libuv's are).
// (sockfd, header, filefd, position, length)

#ifndef SYS_cachestat
#define SYS_cachestat 451
#endif
struct CachestatRange { uint64_t off; uint64_t len; };
struct Cachestat { uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted; };
bool gNoCachestat = false;

bool AllCached(int fd, uint64_t position, uint64_t length) {
  if (gNoCachestat) return false;
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  CachestatRange range = {position, length};
  Cachestat cs = {};
  if (syscall(SYS_cachestat, fd, &range, &cs, 0) != 0) {
    if (errno == ENOSYS) gNoCachestat = true;
    return false;
  }
  const uint64_t pages = (position + length + page - 1) / page - position / page;
  return cs.nr_cache >= pages;
}

// (fd, position, length): is every page of the range in the page cache?
Napi::Value PageCached(const Napi::CallbackInfo& info) {
  int fd;
  uint64_t position, length;
  if (!GetFd(info, 0, &fd) || !GetIndex(info, 1, kMaxSafeInteger, &position) || !GetIndex(info, 2, 0x7ffff000, &length)) {
    return info.Env().Undefined();
  }
  return Napi::Boolean::New(info.Env(), length > 0 && AllCached(fd, position, length));
}

// (sockfd, bytes): SO_SNDBUF (the kernel doubles it and caps it at net.core.wmem_max); returns the
// size now in effect, or -1 when refused.
Napi::Value SetSendBuffer(const Napi::CallbackInfo& info) {
  int sock;
  uint64_t bytes;
  if (!GetFd(info, 0, &sock) || !GetIndex(info, 1, 1 << 30, &bytes)) return info.Env().Undefined();
  int v = static_cast<int>(bytes);
  if (setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &v, sizeof v) != 0) return Napi::Number::New(info.Env(), -1);
  socklen_t len = sizeof v;
  if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &v, &len) != 0) return Napi::Number::New(info.Env(), -1);
  return Napi::Number::New(info.Env(), v);
}

// getsockopt(SO_PEERCRED): the pid, uid and gid of the process at the other end of a unix socket,
// as the kernel recorded them when it connected. undefined when the socket has none (not unix).
Napi::Value PeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock;
  if (!GetFd(info, 0, &sock)) return env.Undefined();
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) return env.Undefined();
  Napi::Object out = Napi::Object::New(env);
  out.Set("pid", Napi::Number::New(env, cred.pid));
  out.Set("uid", Napi::Number::New(env, cred.uid));
  out.Set("gid", Napi::Number::New(env, cred.gid));
  return out;
}

Napi::Value SendFileReply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock, fd;
  uint8_t* hdr;
  size_t hdrLen;
  uint64_t position, length;
  if (!GetFd(info, 0, &sock) || !GetBytes(info, 1, &hdr, &hdrLen) || !GetFd(info, 2, &fd) ||
      !GetIndex(info, 3, kMaxSafeInteger, &position) || !GetIndex(info, 4, 0x7ffff000, &length)) {
    return env.Undefined();
  }
  if (length == 0 || !AllCached(fd, position, length)) return Napi::Number::New(env, -1);
  size_t sent = 0;
  while (sent < hdrLen) {
    ssize_t n = send(sock, hdr + sent, hdrLen - sent, MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Napi::Number::New(env, static_cast<double>(sent));
    sent += static_cast<size_t>(n);
  }
  uint64_t done = 0;
  while (done < length) {
    off_t off = static_cast<off_t>(position + done);
    ssize_t n = sendfile(sock, fd, &off, length - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<uint64_t>(n);
  }
  return Napi::Number::New(env, static_cast<double>(sent + done));
}

// libgcrypt is initialised once, unless another library in the process already did. No secure
// memory: a handle lives for one call and is wiped when closed.
bool InitGcrypt() {
  if (gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) return true;
  if (gcry_check_version(GCRYPT_VERSION) == nullptr) return false;
  gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
  gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
  return true;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  if (!InitGcrypt()) {
    Napi::Error::New(env, "libgcrypt " GCRYPT_VERSION " or newer is needed; an older one is loaded").ThrowAsJavaScriptException();
    return exports;
  }
  exports.Set("xtsCrypt", Napi::Function::New(env, XtsCrypt, "xtsCrypt"));
  exports.Set("xtsCryptAsync", Napi::Function::New(env, XtsCryptAsync, "xtsCryptAsync"));
  exports.Set("preadNoWait", Napi::Function::New(env, PreadNoWait, "preadNoWait"));
  exports.Set("preadXtsAsync", Napi::Function::New(env, PreadXtsAsync, "preadXtsAsync"));
  exports.Set("mapFile", Napi::Function::New(env, MapFile, "mapFile"));
  exports.Set("unmapFile", Napi::Function::New(env, UnmapFile, "unmapFile"));
  exports.Set("xtsFromMapAsync", Napi::Function::New(env, XtsFromMapAsync, "xtsFromMapAsync"));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate, "fallocate"));
  exports.Set("kvmProbe", Napi::Function::New(env, KvmProbe, "kvmProbe"));
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  exports.Set("sendFileReply", Napi::Function::New(env, SendFileReply, "sendFileReply"));
  exports.Set("setSendBuffer", Napi::Function::New(env, SetSendBuffer, "setSendBuffer"));
  exports.Set("pageCached", Napi::Function::New(env, PageCached, "pageCached"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("seekData", Napi::Function::New(env, SeekData, "seekData"));
  return exports;
}

}  // namespace

NODE_API_MODULE(medv, Init)
