// Transport authentication for every ZMQ tcp:// socket (controller, storage
// units, clients, datasystem workers and their peers): libzmq's CURVE, from
// keys the deployment gives in a directory.
//
// A process has keys when $TQDS_CURVE_KEY_DIR names a key directory, or a
// program called UseCurveKeys (tq --curve-key-dir, dscli --enable_curve_zmq
// --curve_key_dir). With keys:
// - servers speak CURVE with the deployment's server key and accept only
//   clients whose public key is authorized (a ZAP handler in the process);
// - clients speak CURVE, prove the client key, and check the server's key;
// - a handshake that fails is reported to the caller as PermissionDenied,
//   naming the endpoint and the likely cause, instead of a timeout.
// Without keys, a server may bind only loopback addresses, unless the
// process allowed plain tcp explicitly (AllowInsecure, $TQDS_ALLOW_INSECURE=1,
// tq --allow-insecure, dscli --allow_insecure); it then warns.
// ipc:// and inproc:// sockets are local and never use CURVE.
//
// The key directory (GenerateCurveKeys writes one; `tq keys DIR`):
//   server.key, client.key            Z85 public keys (40 characters)
//   server.key_secret, client.key_secret
//                                     Z85 secret keys; each optional (a
//                                     process without one cannot serve, or
//                                     connect); must be readable by their
//                                     owner only
//   authorized_clients                optional: Z85 client public keys, one
//                                     per line (lines starting with '#' are comments); default: the
//                                     one in client.key
//
// Thread-safe. The keys are read when first needed (or installed by
// UseCurveKeys) and apply to sockets made afterwards.
#pragma once

#include <memory>
#include <set>
#include <string>

#include <zmq.hpp>

#include "tqds/status.h"

namespace tqds::wire {

struct CurveKeys {
  std::string dir;
  std::string server_public;  // Z85
  std::string server_secret;  // empty: this process cannot serve over tcp
  std::string client_public;  // empty (with its secret): cannot connect
  std::string client_secret;
  std::set<std::string> authorized;  // Z85 client public keys a server accepts
};

// Reads and checks a key directory (see above).
Result<CurveKeys> LoadCurveKeys(const std::string& dir);
// Writes a fresh key set (server and client pairs, authorized_clients) into
// `dir`, created with mode 0700 if absent; refuses to overwrite keys.
Status GenerateCurveKeys(const std::string& dir);

// Installs the keys of `dir` for this process (empty: none, plain tcp).
Status UseCurveKeys(const std::string& dir);
// The keys sockets of this process use: null when it has none. An error
// when $TQDS_CURVE_KEY_DIR names a directory that cannot be used.
Result<std::shared_ptr<const CurveKeys>> ProcessCurveKeys();
// Explicit consent to serve on non-loopback tcp addresses without keys.
void AllowInsecure(bool allow);

// Prepares a server socket that will bind `endpoint`: CURVE server with the
// process's keys (starting the ZAP handler), or plain after the loopback /
// consent check. PermissionDenied when neither holds.
Status SecureServerSocket(zmq::socket_t& socket, const std::string& endpoint);
// For a plain (keyless) tcp server of `endpoint` (the datasystem's data
// plane too): OK on loopback or with consent (warning once), else
// PermissionDenied saying how to give keys or consent.
Status CheckPlainServe(const std::string& endpoint);
// Prepares a client socket that will connect to `endpoint`: with `keys`
// when given (a client's own keys, e.g. openYuanrong's KVClient arguments
// client_public_key / client_private_key / server_public_key), else with
// the process's.
Status SecureClientSocket(zmq::socket_t& socket, const std::string& endpoint,
                          const std::shared_ptr<const CurveKeys>& keys = nullptr);
// A client's own keys from three Z85 strings (40 characters each): all
// three, or none (null: the process's keys apply). Invalid, naming the
// argument, for a partial set or a string that is not a Z85 key.
Result<std::shared_ptr<const CurveKeys>> ClientCurveKeys(const std::string& client_public,
                                                        const std::string& client_secret,
                                                        const std::string& server_public);
// Why a handshake failed, for a client's error (a monitor event and its
// value), with what to check.
// `own`: the client's own keys, when it was given some (else the process's
// keys are the ones that failed).
std::string DescribeHandshakeFailure(uint16_t event, int32_t value, const CurveKeys* own = nullptr);
// True for tcp endpoints whose host is a loopback address (127.0.0.0/8,
// ::1, localhost).
bool IsLoopbackEndpoint(const std::string& endpoint);

}  // namespace tqds::wire
