// Moves Messages over ZMQ sockets. Payload frames are sent zero-copy (the
// socket holds a reference to each Buffer until the bytes are on the wire)
// and received zero-copy (a received frame becomes a Buffer that owns the
// zmq message). Not thread-safe: a socket belongs to one thread.
#pragma once

#include <zmq.hpp>

#include <vector>

#include "common/wire/message.h"

namespace tqds::wire {

// The process-wide ZMQ context (2 I/O threads).
zmq::context_t& Context();

// Sends [routing..., header, payloads...]. Never blocks forever: returns
// Unavailable if the socket cannot take the message.
Status SendMessage(zmq::socket_t& socket, const Message& message,
                   std::vector<zmq::message_t>* routing = nullptr);

// Receives one multipart message. With `routing`, frames before the header
// (ROUTER identities) are returned there; a ROUTER peer sends exactly one.
// Malformed input yields Invalid; the socket stays usable (all parts drained).
Result<Message> RecvMessage(zmq::socket_t& socket, std::vector<zmq::message_t>* routing = nullptr,
                            const WireLimits& limits = DefaultLimits());

// Wraps a received zmq message as a Buffer without copying.
Buffer BufferFromZmq(zmq::message_t&& msg);

// TQDS_WIRE_CAPTURE_DIR=dir: a process writes the first few inputs of each
// kind it receives to dir/<family><kind>-<pid>-<n>.bin (at most 16 KiB
// each), real traffic for the fuzz targets' seed corpus (fuzz/README.md).
// `family` "" is a ZMQ header frame, "local-" a Unix-socket frame,
// "data-" a data-plane request batch. Off (one getenv) unless set.
void CaptureInput(const char* family, int kind, const void* data, size_t size);
// Whether TQDS_WIRE_CAPTURE_DIR is set (for callers that must first gather
// an input's parts).
bool CaptureOn();

}  // namespace tqds::wire
