// medv native addon: only what Node cannot do, or cannot do fast (DESIGN.md, "native/").
//
//   xtsCrypt(key, input, output, firstUnit, unitSize, encrypt)  batch AES-256-XTS, one EVP context
//   pread(fd, buf, offset, position) / pwrite(...) / fdatasync(fd)  synchronous, no thread-pool hop
//   preadAsync / pwriteAsync / fdatasyncAsync                    the same on the libuv pool (AsyncWorker)
//   kvmProbe()                                                   open /dev/kvm, KVM_GET_API_VERSION == 12
//   flock(fd, exclusive)                                         flock(2) LOCK_EX|LOCK_SH with LOCK_NB: true, or false when held
//
// OpenSSL comes from Node's own headers and is resolved against the symbols the node binary exports:
// nothing extra is linked. The typed boundary (argument checks that raise MedvError) lives in
// src/native.ts; the checks here only keep hostile arguments from touching memory out of bounds.
// Error objects carry `code` (e.g. "ENOENT") and `errno` like Node's fs errors, and never key bytes.

#include <napi.h>
#include <openssl/evp.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

constexpr unsigned long kKvmGetApiVersion = 0xAE00;  // _IO(KVMIO=0xAE, 0x00)
constexpr int kKvmApiVersion = 12;
constexpr size_t kXtsKeyBytes = 64;
constexpr double kMaxSafeInteger = 9007199254740991.0;
// OpenSSL refuses one XTS update longer than 2^20 blocks of 16 bytes.
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
// number (LUKS "plain64"). One EVP context per call: the key schedule is set once and only the
// IV is re-initialised per unit. input may be the same memory as output (in-place).
Napi::Value XtsCrypt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint8_t *key, *in, *out;
  size_t keyLen, inLen, outLen;
  uint64_t firstUnit, unitSize;
  if (!GetBytes(info, 0, &key, &keyLen) || !GetBytes(info, 1, &in, &inLen) || !GetBytes(info, 2, &out, &outLen) ||
      !GetIndex(info, 3, kMaxSafeInteger, &firstUnit) || !GetIndex(info, 4, kMaxUnitSize, &unitSize)) {
    return env.Undefined();
  }
  if (info.Length() < 6 || !info[5].IsBoolean()) {
    ThrowType(env, "encrypt must be a boolean");
    return env.Undefined();
  }
  const bool encrypt = info[5].As<Napi::Boolean>().Value();
  if (keyLen != kXtsKeyBytes) { ThrowRange(env, "key must be 64 bytes"); return env.Undefined(); }
  if (unitSize < 16 || unitSize % 16 != 0) { ThrowRange(env, "unit size must be a multiple of 16, at least 16"); return env.Undefined(); }
  if (inLen % unitSize != 0) { ThrowRange(env, "input length must be a multiple of the unit size"); return env.Undefined(); }
  if (outLen < inLen) { ThrowRange(env, "output is shorter than input"); return env.Undefined(); }
  if (in != out && in < out + inLen && out < in + inLen) { ThrowRange(env, "input and output overlap partially"); return env.Undefined(); }
  const uint64_t units = inLen / unitSize;
  if (units == 0) return env.Undefined();
  if (firstUnit + units - 1 < firstUnit) { ThrowRange(env, "unit number overflow"); return env.Undefined(); }

  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  if (ctx == nullptr) { Napi::Error::New(env, "EVP_CIPHER_CTX_new failed").ThrowAsJavaScriptException(); return env.Undefined(); }
  bool ok = EVP_CipherInit_ex(ctx, EVP_aes_256_xts(), nullptr, key, nullptr, encrypt ? 1 : 0) == 1;
  uint8_t iv[16];
  memset(iv, 0, sizeof iv);
  for (uint64_t i = 0; ok && i < units; i++) {
    uint64_t t = firstUnit + i;
    for (int b = 0; b < 8; b++) iv[b] = static_cast<uint8_t>(t >> (8 * b));
    int n = 0;
    ok = EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, -1) == 1 &&
         EVP_CipherUpdate(ctx, out + i * unitSize, &n, in + i * unitSize, static_cast<int>(unitSize)) == 1 &&
         static_cast<uint64_t>(n) == unitSize;
  }
  EVP_CIPHER_CTX_free(ctx);  // clears the key schedule
  if (!ok) Napi::Error::New(env, "AES-256-XTS failed (OpenSSL refused the key or data)").ThrowAsJavaScriptException();
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// Positional I/O. Each loops over short transfers and EINTR; pread stops at end of file and
// returns the byte count (less than requested only at EOF); pwrite writes everything.

ssize_t FullPread(int fd, uint8_t* p, size_t len, uint64_t pos, int* err) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, p + done, len - done, static_cast<off_t>(pos + done));
    if (n < 0) { if (errno == EINTR) continue; *err = errno; return -1; }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

ssize_t FullPwrite(int fd, const uint8_t* p, size_t len, uint64_t pos, int* err) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pwrite(fd, p + done, len - done, static_cast<off_t>(pos + done));
    if (n < 0) { if (errno == EINTR) continue; *err = errno; return -1; }
    if (n == 0) { *err = EIO; return -1; }
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

int FullFdatasync(int fd) {
  for (;;) {
    if (::fdatasync(fd) == 0) return 0;
    if (errno != EINTR) return errno;
  }
}

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

Napi::Value Pread(const Napi::CallbackInfo& info) {
  IoArgs a;
  if (!GetIoArgs(info, &a)) return info.Env().Undefined();
  int err = 0;
  ssize_t n = FullPread(a.fd, a.data, a.len, a.position, &err);
  if (n < 0) { SysError(info.Env(), "pread", err).ThrowAsJavaScriptException(); return info.Env().Undefined(); }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
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

Napi::Value Pwrite(const Napi::CallbackInfo& info) {
  IoArgs a;
  if (!GetIoArgs(info, &a)) return info.Env().Undefined();
  int err = 0;
  ssize_t n = FullPwrite(a.fd, a.data, a.len, a.position, &err);
  if (n < 0) { SysError(info.Env(), "pwrite", err).ThrowAsJavaScriptException(); return info.Env().Undefined(); }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

Napi::Value Fdatasync(const Napi::CallbackInfo& info) {
  int fd;
  if (!GetFd(info, 0, &fd)) return info.Env().Undefined();
  int err = FullFdatasync(fd);
  if (err != 0) SysError(info.Env(), "fdatasync", err).ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

// The same on the libuv thread pool. The buffer is held by a reference until completion.
class IoWorker : public Napi::AsyncWorker {
 public:
  enum Op { kRead, kWrite, kSync };
  IoWorker(Napi::Env env, Op op, const IoArgs& a, Napi::Value buffer)
      : Napi::AsyncWorker(env), op_(op), args_(a), deferred_(Napi::Promise::Deferred::New(env)) {
    if (!buffer.IsUndefined()) keep_ = Napi::Persistent(buffer.As<Napi::Object>());
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    switch (op_) {
      case kRead: result_ = FullPread(args_.fd, args_.data, args_.len, args_.position, &err_); break;
      case kWrite: result_ = FullPwrite(args_.fd, args_.data, args_.len, args_.position, &err_); break;
      case kSync: err_ = FullFdatasync(args_.fd); result_ = err_ ? -1 : 0; break;
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (result_ < 0) {
      const char* name = op_ == kRead ? "pread" : op_ == kWrite ? "pwrite" : "fdatasync";
      deferred_.Reject(SysError(env, name, err_).Value());
    } else if (op_ == kSync) {
      deferred_.Resolve(env.Undefined());
    } else {
      deferred_.Resolve(Napi::Number::New(env, static_cast<double>(result_)));
    }
    if (!keep_.IsEmpty()) keep_.Reset();
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Op op_;
  IoArgs args_;
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  ssize_t result_ = 0;
  int err_ = 0;
};

Napi::Value StartIo(const Napi::CallbackInfo& info, IoWorker::Op op) {
  IoArgs a;
  if (op == IoWorker::kSync) {
    if (!GetFd(info, 0, &a.fd)) return info.Env().Undefined();
  } else if (!GetIoArgs(info, &a)) {
    return info.Env().Undefined();
  }
  auto* w = new IoWorker(info.Env(), op, a, op == IoWorker::kSync ? info.Env().Undefined() : info[1]);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value PreadAsync(const Napi::CallbackInfo& info) { return StartIo(info, IoWorker::kRead); }
Napi::Value PwriteAsync(const Napi::CallbackInfo& info) { return StartIo(info, IoWorker::kWrite); }
Napi::Value FdatasyncAsync(const Napi::CallbackInfo& info) { return StartIo(info, IoWorker::kSync); }

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("xtsCrypt", Napi::Function::New(env, XtsCrypt, "xtsCrypt"));
  exports.Set("pread", Napi::Function::New(env, Pread, "pread"));
  exports.Set("pwrite", Napi::Function::New(env, Pwrite, "pwrite"));
  exports.Set("preadNoWait", Napi::Function::New(env, PreadNoWait, "preadNoWait"));
  exports.Set("fdatasync", Napi::Function::New(env, Fdatasync, "fdatasync"));
  exports.Set("preadAsync", Napi::Function::New(env, PreadAsync, "preadAsync"));
  exports.Set("pwriteAsync", Napi::Function::New(env, PwriteAsync, "pwriteAsync"));
  exports.Set("fdatasyncAsync", Napi::Function::New(env, FdatasyncAsync, "fdatasyncAsync"));
  exports.Set("kvmProbe", Napi::Function::New(env, KvmProbe, "kvmProbe"));
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  return exports;
}

}  // namespace

NODE_API_MODULE(medv, Init)
