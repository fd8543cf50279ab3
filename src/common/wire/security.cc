// CURVE keys, the ZAP handler and the loopback rule. See security.h.
#include "common/wire/security.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "common/socket_io.h"
#include "common/wire/transport.h"

namespace tqds::wire {

namespace {

constexpr size_t kZ85KeyChars = 40;
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";  // fixed by libzmq (RFC 27)
constexpr const char* kZapDomain = "tqds";

struct ProcessState {
  std::mutex mu;
  bool loaded = false;                     // guarded by mu
  std::shared_ptr<const CurveKeys> keys;   // guarded by mu
  Status error;                            // guarded by mu: why $TQDS_CURVE_KEY_DIR is unusable
  bool allow_insecure = false;             // guarded by mu
  std::set<std::string> warned;            // guarded by mu: plain endpoints warned about
  pid_t zap_pid = 0;                       // guarded by mu: the process whose context has the handler
};

ProcessState& State() {
  static ProcessState* s = new ProcessState;  // leaked: the ZAP thread may outlive static destruction
  return *s;
}

bool ValidZ85Key(const std::string& k) {
  if (k.size() != kZ85KeyChars) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, k.c_str()) != nullptr;
}

std::string Trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

// The key in `path` ("" when absent and !required). A secret must belong to
// this user and be unreadable by others, as ssh demands of its keys.
Result<std::string> ReadKey(const std::string& path, bool secret, bool required) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT && !required) return std::string();
    return Status::Invalid("key file ", path, ": ", std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Status::Invalid("key file ", path, " is not a regular file");
  if (secret && ((st.st_mode & 077) != 0 || st.st_uid != ::geteuid())) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::PermissionDenied("secret key ", path, " must belong to this user and be readable by it only "
                                    "(mode ", mode, ", owner uid ", st.st_uid, "): chmod 600 it");
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string key = Trim(text.str());
  if (!ValidZ85Key(key)) {
    return Status::Invalid("key file ", path, " does not hold a Z85 CURVE key (40 characters)");
  }
  return key;
}

std::string PublicOf(const std::string& secret) {
  char pub[kZ85KeyChars + 1] = {};
  if (zmq_curve_public(pub, secret.c_str()) != 0) return "";
  return pub;
}

Status WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return Status::IOError("cannot create ", path, ": ", std::strerror(errno));
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) return Status::IOError("cannot write ", path, ": ", std::strerror(err));
  return Status::OK();
}

bool InsecureAllowed(ProcessState& s) {
  if (s.allow_insecure) return true;
  const char* env = std::getenv("TQDS_ALLOW_INSECURE");
  return env != nullptr && (std::strcmp(env, "1") == 0 || std::strcmp(env, "true") == 0);
}

// ZAP (RFC 27): [version, request id, domain, address, identity, mechanism,
// credentials...] -> [version, request id, status code, text, user id,
// metadata]. A CURVE client is accepted when its key is authorized.
void ServeZap(zmq::socket_t* rep) {
  while (true) {
    std::vector<zmq::message_t> req;
    try {
      zmq::message_t part;
      do {
        if (!rep->recv(part, zmq::recv_flags::none)) break;
        req.push_back(std::move(part));
        part = zmq::message_t();
      } while (req.back().more());
    } catch (const zmq::error_t&) {
      return;  // the context is going away
    }
    auto text = [&](size_t i) { return i < req.size() ? req[i].to_string() : std::string(); };
    std::string code = "400", reason = "unknown client key", user;
    if (req.size() < 6 || text(0) != "1.0") {
      code = "500";
      reason = "malformed ZAP request";
    } else if (text(5) == "CURVE" && req.size() >= 7 && req[6].size() == 32) {
      char z85[kZ85KeyChars + 1] = {};
      zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
      auto keys = ProcessCurveKeys();
      if (keys.ok() && *keys && (*keys)->authorized.count(z85) != 0) {
        code = "200";
        reason = "OK";
        user = z85;
      } else {
        spdlog::warn("refused a connection from {}: client key {} is not authorized{}", text(3), z85,
                     keys.ok() && *keys ? " in " + (*keys)->dir : "");
      }
    } else {
      reason = "mechanism " + text(5) + " is not accepted";
    }
    try {
      const std::string parts[] = {"1.0", text(1), code, reason, user, ""};
      for (size_t i = 0; i < 6; ++i) {
        rep->send(zmq::buffer(parts[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    } catch (const zmq::error_t&) {
      return;
    }
  }
}

// Binds this process's ZAP handler on the process's context (once per
// process: a forked child has a context of its own).
Status EnsureZapHandler() {
  ProcessState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.zap_pid == ::getpid()) return Status::OK();
  auto* rep = new zmq::socket_t(Context(), zmq::socket_type::rep);  // lives as long as the context
  try {
    rep->set(zmq::sockopt::linger, 0);
    rep->bind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    delete rep;
    return Status::Internal("cannot start the authentication handler at ", kZapEndpoint, ": ", e.what());
  }
  std::thread([rep] { ServeZap(rep); }).detach();
  s.zap_pid = ::getpid();
  return Status::OK();
}

}  // namespace

Result<CurveKeys> LoadCurveKeys(const std::string& dir) {
  struct stat st {};
  if (dir.empty() || ::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::Invalid("CURVE key directory '", dir, "' does not exist (make one with `tq keys DIR`)");
  }
  CurveKeys k;
  k.dir = dir;
  TQDS_ASSIGN_OR_RETURN(k.server_public, ReadKey(dir + "/server.key", false, true));
  TQDS_ASSIGN_OR_RETURN(k.server_secret, ReadKey(dir + "/server.key_secret", true, false));
  TQDS_ASSIGN_OR_RETURN(k.client_secret, ReadKey(dir + "/client.key_secret", true, false));
  TQDS_ASSIGN_OR_RETURN(k.client_public, ReadKey(dir + "/client.key", false, !k.client_secret.empty()));
  if (k.server_secret.empty() && k.client_secret.empty()) {
    return Status::Invalid("CURVE key directory ", dir, " has neither server.key_secret nor client.key_secret");
  }
  if (!k.server_secret.empty() && PublicOf(k.server_secret) != k.server_public) {
    return Status::Invalid(dir, "/server.key is not the public key of server.key_secret");
  }
  if (!k.client_secret.empty() && PublicOf(k.client_secret) != k.client_public) {
    return Status::Invalid(dir, "/client.key is not the public key of client.key_secret");
  }
  const std::string list = dir + "/authorized_clients";
  std::ifstream in(list);
  if (in) {
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      line = Trim(line);
      if (line.empty() || line[0] == '#') continue;  // '#' is also a Z85 digit: only whole-line comments
      if (!ValidZ85Key(line)) return Status::Invalid(list, " line ", n, " is not a Z85 CURVE public key");
      k.authorized.insert(line);
    }
  } else if (!k.client_public.empty()) {
    k.authorized.insert(k.client_public);
  }
  return k;
}

Status GenerateCurveKeys(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Status::IOError("cannot create ", dir, ": ", std::strerror(errno));
  }
  char server_pub[kZ85KeyChars + 1], server_sec[kZ85KeyChars + 1];
  char client_pub[kZ85KeyChars + 1], client_sec[kZ85KeyChars + 1];
  if (zmq_curve_keypair(server_pub, server_sec) != 0 || zmq_curve_keypair(client_pub, client_sec) != 0) {
    return Status::Internal("libzmq cannot make CURVE keys: ", zmq_strerror(zmq_errno()));
  }
  TQDS_RETURN_NOT_OK(WriteFile(dir + "/server.key_secret", std::string(server_sec) + "\n", 0600));
  TQDS_RETURN_NOT_OK(WriteFile(dir + "/server.key", std::string(server_pub) + "\n", 0644));
  TQDS_RETURN_NOT_OK(WriteFile(dir + "/client.key_secret", std::string(client_sec) + "\n", 0600));
  TQDS_RETURN_NOT_OK(WriteFile(dir + "/client.key", std::string(client_pub) + "\n", 0644));
  return WriteFile(dir + "/authorized_clients", "# client public keys servers accept, one per line\n" +
                                                    std::string(client_pub) + "\n", 0644);
}

Status UseCurveKeys(const std::string& dir) {
  std::shared_ptr<const CurveKeys> keys;
  if (!dir.empty()) {
    TQDS_ASSIGN_OR_RETURN(CurveKeys k, LoadCurveKeys(dir));
    keys = std::make_shared<const CurveKeys>(std::move(k));
  }
  ProcessState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  s.keys = std::move(keys);
  s.error = Status::OK();
  s.loaded = true;
  return Status::OK();
}

Result<std::shared_ptr<const CurveKeys>> ProcessCurveKeys() {
  ProcessState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.loaded) {
    s.loaded = true;
    const char* dir = std::getenv("TQDS_CURVE_KEY_DIR");
    if (dir != nullptr && *dir != '\0') {
      auto k = LoadCurveKeys(dir);
      if (k.ok()) {
        s.keys = std::make_shared<const CurveKeys>(k.MoveValue());
      } else {
        s.error = k.status().WithContext("TQDS_CURVE_KEY_DIR");
      }
    }
  }
  if (!s.error.ok()) return s.error;
  return s.keys;
}

void AllowInsecure(bool allow) {
  ProcessState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  s.allow_insecure = allow;
}

bool IsLoopbackEndpoint(const std::string& endpoint) {
  std::string host = tqds::net::TcpEndpointHost(endpoint);
  if (host.empty()) return false;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host == "localhost" || host == "::1") return true;
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  return false;
}

Status SecureServerSocket(zmq::socket_t& socket, const std::string& endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return Status::OK();
  TQDS_ASSIGN_OR_RETURN(auto keys, ProcessCurveKeys());
  if (keys) {
    if (keys->server_secret.empty()) {
      return Status::PermissionDenied("cannot serve on ", endpoint, " with authentication: ", keys->dir,
                                      " has no server.key_secret");
    }
    TQDS_RETURN_NOT_OK(EnsureZapHandler());
    socket.set(zmq::sockopt::zap_domain, kZapDomain);
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, keys->server_secret);
    return Status::OK();
  }
  return CheckPlainServe(endpoint);
}

Status CheckPlainServe(const std::string& endpoint) {
  if (IsLoopbackEndpoint(endpoint)) return Status::OK();
  ProcessState& s = State();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!InsecureAllowed(s)) {
    return Status::PermissionDenied(
        "refusing to serve on ", endpoint, " without authentication: whoever reaches that address could read, "
        "write and stop this service. Give the deployment's keys (TQDS_CURVE_KEY_DIR=DIR; make them with `tq keys "
        "DIR`), or allow plain tcp explicitly (TQDS_ALLOW_INSECURE=1, tq --allow-insecure, dscli "
        "--allow_insecure true)");
  }
  if (s.warned.insert(endpoint).second) {
    spdlog::warn("serving on {} WITHOUT authentication (allowed explicitly): anyone who reaches it can read, write "
                 "and stop this service", endpoint);
  }
  return Status::OK();
}

Status SecureClientSocket(zmq::socket_t& socket, const std::string& endpoint,
                          const std::shared_ptr<const CurveKeys>& own) {
  if (endpoint.rfind("tcp://", 0) != 0) return Status::OK();
  std::shared_ptr<const CurveKeys> keys = own;
  if (!keys) {
    TQDS_ASSIGN_OR_RETURN(keys, ProcessCurveKeys());
  }
  if (!keys) return Status::OK();
  if (keys->client_secret.empty()) {
    return Status::PermissionDenied("cannot connect to ", endpoint, " with authentication: ", keys->dir,
                                    " has no client.key_secret");
  }
  socket.set(zmq::sockopt::curve_serverkey, keys->server_public);
  socket.set(zmq::sockopt::curve_publickey, keys->client_public);
  socket.set(zmq::sockopt::curve_secretkey, keys->client_secret);
  return Status::OK();
}

Result<std::shared_ptr<const CurveKeys>> ClientCurveKeys(const std::string& client_public,
                                                        const std::string& client_secret,
                                                        const std::string& server_public) {
  const std::pair<const char*, const std::string*> args[] = {
      {"client_public_key", &client_public}, {"client_private_key", &client_secret},
      {"server_public_key", &server_public}};
  std::string missing;
  size_t given = 0;
  for (const auto& [name, value] : args) {
    if (!value->empty()) {
      ++given;
    } else {
      missing += (missing.empty() ? "" : ", ") + std::string(name);
    }
  }
  if (given == 0) return std::shared_ptr<const CurveKeys>();
  if (!missing.empty()) {
    return Status::Invalid("client keys: ", missing, " missing (give client_public_key, client_private_key and "
                           "server_public_key together, or none)");
  }
  for (const auto& [name, value] : args) {
    uint8_t raw[32];
    if (value->size() != 40 || zmq_z85_decode(raw, value->c_str()) == nullptr) {
      return Status::Invalid("client keys: ", name, " is not a Z85 CURVE key (40 characters, as zmq_curve_keypair "
                             "or `tq keys` writes them)");
    }
  }
  auto keys = std::make_shared<CurveKeys>();
  keys->dir = "the client's own keys";
  keys->client_public = client_public;
  keys->client_secret = client_secret;
  keys->server_public = server_public;
  return std::shared_ptr<const CurveKeys>(std::move(keys));
}

std::string DescribeHandshakeFailure(uint16_t event, int32_t value, const CurveKeys* own) {
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
    if (value == 400) return "the server refused this process's client key (it is not in the server's authorized_clients)";
    return "the server's authentication handler failed (ZAP status " + std::to_string(value) + ")";
  }
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
    switch (value) {
      case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "one side has authentication keys and the other has not (give both the deployment's "
               "TQDS_CURVE_KEY_DIR, or neither)";
      case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
      case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE:
        return "the keys do not match (this process's server.key is not the server's, or its client key is "
               "not the one it claims)";
      default: {
        char hex[16];
        std::snprintf(hex, sizeof(hex), "0x%08x", static_cast<unsigned>(value));
        return std::string("protocol error ") + hex + " during the handshake";
      }
    }
  }
  std::string why;
  if (own != nullptr) {
    why = "most often the server public key this client was given is not the server's, or the server has no keys";
  } else {
    auto keys = ProcessCurveKeys();
    why = keys.ok() && *keys ? "most often this process's server.key is not the server's, or the server has no keys"
                             : "it wants authentication keys and this process has none (set TQDS_CURVE_KEY_DIR)";
  }
  return std::string("the server ended the handshake (") + std::strerror(value) + "): " + why;
}

}  // namespace tqds::wire
