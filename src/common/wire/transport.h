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

}  // namespace tqds::wire
